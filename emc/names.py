"""Names emc derives: one rule for artefact, report and C identifiers on every platform."""


def c_identifier(name):
    """A C identifier from a model name: letters, digits and underscores, not starting with a digit."""
    text = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(name)) or "model"
    return "m_" + text if text[0].isdigit() else text
