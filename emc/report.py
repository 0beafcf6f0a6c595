"""A conversion report: one row per device layer plus totals, printable as an NNoM-style table."""


def _fmt(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return "" if value is None else str(value)


def html_escape(value):
    import html
    return html.escape(str(value))


class Report:
    """Rows (dicts with the same keys) and totals (an ordered dict); str() gives an aligned table."""

    def __init__(self, title, columns, rows=None, totals=None, notes=None):
        self.title = title
        self.columns = list(columns)
        self.rows = list(rows or [])
        self.totals = dict(totals or {})
        self.notes = list(notes or [])

    def add(self, **row):
        self.rows.append(row)

    def table(self):
        cells = [[_fmt(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in self.rows)
                   for c in self.columns]

        def line(values):
            return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

        out = [self.title, line(self.columns), line(["-" * w for w in widths])]
        out += [line(r) for r in cells]
        if self.totals:
            out.append("")
            key_width = max(len(k) for k in self.totals)
            out += [f"{k.ljust(key_width)} : {_fmt(v)}" for k, v in self.totals.items()]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def as_dict(self):
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "totals": self.totals,
                "notes": self.notes}

    def __str__(self):
        return self.table()

    def _repr_html_(self):
        """The report as an HTML table (Jupyter shows this instead of the text)."""
        numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in self.rows)
                   for c in self.columns]
        head = "".join(f"<th>{html_escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(
            f'<td style="text-align: {"right" if num else "left"}">{html_escape(_fmt(row.get(c)))}</td>'
            for c, num in zip(self.columns, numeric)) + "</tr>" for row in self.rows)
        totals = "".join(f"<tr><th style='text-align: left'>{html_escape(k)}</th><td>{html_escape(_fmt(v))}</td></tr>"
                         for k, v in self.totals.items())
        notes = "".join(f"<li>{html_escape(n)}</li>" for n in self.notes)
        return (f"<div><b>{html_escape(self.title)}</b><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                f"</table>" + (f"<table>{totals}</table>" if totals else "") + (f"<ul>{notes}</ul>" if notes else "")
                + "</div>")
