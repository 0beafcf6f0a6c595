"""Issue 13 item 3: `emc inspect` of a file emc wrote prints the report printed at conversion -- the same rows
and totals, the totals recomputed from the file (MACs counted once, a dense layer on a padded 4x4 KPU map not
16 times; kpu_upload on the CPU in both; the KPU RAM peak in both)."""
import numpy as np
import pytest

import emc
from emc.cli import main
from emc.platforms.k210.inspect import file_totals
from test_journey_compare import dense_on_map_graph
from zoo import KERAS_ZOO

ZOO_MODELS = ["maixemc_cifar", "mobilenet_v1_025", "resnet_small", "pools_padding"]


def inspect_text(path, capsys):
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    return capsys.readouterr().out.strip()


def check_same(artefact, tmp_path, capsys):
    path = artefact.save(tmp_path / f"{artefact.name}_v{artefact.model.version}.kmodel")[0]
    printed = inspect_text(path, capsys)
    assert printed == str(artefact.report).strip()
    totals = file_totals(emc.load_kmodel(path))
    for key, value in totals.items():                        # the report's totals are the file's
        assert artefact.report.totals[key] == value, key
    return path


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_conversion_report_equals_inspect(name, tmp_path, capsys):
    model = KERAS_ZOO[name]()
    data = np.random.default_rng(0).random((4,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    graph = emc.load_model(model)
    for version in (3, 4):
        check_same(emc.convert(graph, dataset=data, version=version), tmp_path, capsys)


def test_padded_dense_counted_once_and_units_agree(tmp_path, capsys):
    g = dense_on_map_graph()
    data = np.random.default_rng(1).random((4, 8, 8, 4)).astype(np.float32)
    for version in (3, 4):
        artefact = emc.convert(g, dataset=data, version=version)
        path = check_same(artefact, tmp_path, capsys)
        expected = 4 * 9 * 16 * 64 + 1024 * 1024 + 1024 * 512 + 512 * 10
        assert artefact.report.totals["MACs"] == expected
        foreign = emc.load_kmodel(open(path, "rb").read())      # the reader alone, without emc's sidecar
        assert foreign.totals()["MACs"] == expected
        units = {r["type"]: r["unit"] for r in foreign.summary()}
        report_units = {r["type"]: r["unit"] for r in artefact.report.rows}
        assert units == report_units                             # kpu_upload / K210_UPLOAD: CPU in both


def test_c_folder_inspect_prints_the_conversion_report(tmp_path, capsys):
    g = dense_on_map_graph()
    data = np.random.default_rng(1).random((4, 8, 8, 4)).astype(np.float32)
    artefact = emc.convert(g, platform="c", dataset=data)
    artefact.save(tmp_path / "c")
    assert inspect_text(tmp_path / "c", capsys) == str(artefact.report).strip()
