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
