"""`emc inspect` of a kmodel in the conversion report's own terms: the same columns, the same totals (MACs counted
once, bytes, KPU RAM peak), so a file emc wrote prints what its conversion printed, checked against the file.

Totals are recomputed from the kmodel bytes. For emc's own kmodel the rows, graph layer names and notes come
from the `.emc.json` saved with it; any disagreement between that report and the file is noted, not hidden.
"""
from ...report import Report
from .artefact import REPORT_COLUMNS
from .chip.kpu import kpu_rows



def _kpu_lines(model):
    """KPU RAM the file uses, in 64-byte lines: the furthest end of any map a layer reads or writes there."""
    end = 0
    layers = model.layers if model.version == 3 else model.nodes
    for layer in layers:
        arg = getattr(layer, "arg", None)
        if arg is not None and hasattr(arg, "image_src_addr"):
            c, h, w = arg.in_shape
            oc, oh, ow = arg.out_shape
            end = max(end, arg.image_src_addr + kpu_rows(w, h, c), arg.image_dst_addr + kpu_rows(ow, oh, oc))
    for row in model.summary():
        if row["type"] in ("K210_UPLOAD", "K210_ADD_PADDING"):
            line = int(str(row["out_addr"]).split(":")[1])
            c, h, w = row["output"]
            end = max(end, line + kpu_rows(w, h, c))
        elif row["type"] == "kpu_upload":
            mem = row["memory"].split("-> kpu:u8[")[1].rstrip("]")
            start, size = (int(v) for v in mem.split("+"))
            end = max(end, (start + size + 63) // 64)
    return end


def file_rows(model):
    """[{'#', 'type', 'unit', 'MACs'}] per device layer of the file, MACs counted once per real value."""
    rows = []
    for r in model.summary():
        rows.append({"#": r["index"], "type": r["type"], "unit": r["unit"], "MACs": int(r["macs"])})
    return rows


def file_totals(model, rows=None):
    """The conversion report's totals, recomputed from the file."""
    rows = file_rows(model) if rows is None else rows
    macs = sum(r["MACs"] for r in rows)
    kpu = sum(r["MACs"] for r in rows if r["unit"] == "KPU")
    main = model.header.main_mem_usage if model.version == 3 else model.header.main_mem
    return {"layers": len(rows), "KPU RAM peak (bytes)": _kpu_lines(model) * 64, "main memory (bytes)": main,
            "file size (bytes)": len(model.data), "MACs": macs,
            "MACs on the KPU": f"{100.0 * kpu / macs:.1f}%" if macs else "-"}


def kmodel_report(model, doc=None):
    """A Report of a parsed kmodel: emc's saved conversion report checked against the file when `doc` (its
    sidecar) is given, else the reader's rows in the conversion report's columns."""
    from ...sidecar import report_of
    rows = file_rows(model)
    totals = file_totals(model, rows)
    saved = report_of(doc)
    if saved is None:
        detail = model.summary()
        report = Report(f"kmodel v{model.version} (not written by emc, or its .emc.json is missing: no graph "
                        f"layer names)", REPORT_COLUMNS)
        for r, d in zip(rows, detail):
            out = d["output"]
            report.add(**{"#": r["#"], "type": r["type"], "unit": r["unit"], "layer": "",
                          "output": "x".join(map(str, out[-3:] if len(out) == 4 else out)) if out else "",
                          "MACs": r["MACs"], "weights": d["weights"]})
        report.columns = [c for c in REPORT_COLUMNS if c not in ("layer", "path", "mem in", "mem out")]
        report.totals.update(totals)
        return report
    report = Report(saved.title, saved.columns, saved.rows, dict(saved.totals), list(saved.notes))
    differ = [f"{k}: report {saved.totals.get(k)!r}, file {v!r}" for k, v in totals.items()
              if k in saved.totals and saved.totals[k] != v]
    for mine, theirs in zip(rows, saved.rows):
        for key in ("type", "unit", "MACs"):
            if mine[key] != theirs.get(key):
                differ.append(f"layer {mine['#']} {key}: report {theirs.get(key)!r}, file {mine[key]!r}")
    if len(rows) != len(saved.rows):
        differ.append(f"layers: report {len(saved.rows)}, file {len(rows)}")
    if differ:
        report.notes.append("the file disagrees with the report saved at conversion: " + "; ".join(differ))
    report.totals.update(totals)
    return report
