"""emc.run_kmodel and `emc run` turn every wrong argument into an EmcError saying what was expected."""
import numpy as np
import pytest

import emc
from conftest import reference_path
from test_cli import assert_one_line_error, emc_cli


@pytest.fixture(params=["kmodel-v3", "kmodel-v4"])
def iris(request):
    return emc.load_kmodel(reference_path(request.param, "nncase_iris.kmodel"))


@pytest.mark.parametrize("x, fragment", [
    (np.ones(4, np.complex64), "complex numbers"),
    (np.array(["5.1", "3.8", "1.9", "0.4"]), "strings"),
    ("5.1 3.8 1.9 0.4", "not str"),
    ({"input": np.ones(4, np.float32)}, "not a dict"),
    ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], "rectangular"),
    (np.array([object(), 1, 2, 3], dtype=object), "Python objects"),
    (np.ones(5, np.float32), "shape"),
])
def test_bad_inputs_are_emc_errors_saying_what_is_expected(iris, x, fragment):
    with pytest.raises(emc.EmcError, match=fragment):
        emc.run_kmodel(iris, x)


def test_an_unknown_keyword_lists_the_accepted_ones(iris):
    with pytest.raises(emc.EmcError, match=r"unknown option\(s\) lay_out .*layout"):
        emc.run_kmodel(iris, np.ones(4, np.float32), lay_out="chw")


def test_a_graph_or_another_object_instead_of_a_kmodel():
    graph = emc.Graph("g")
    with pytest.raises(emc.EmcError, match="not an emc.Graph.*graph.run"):
        emc.run_kmodel(graph, np.zeros(4, np.float32))
    with pytest.raises(emc.EmcError, match="not int"):
        emc.run_kmodel(42, np.zeros(4, np.float32))


def test_good_arguments_still_run(iris):
    outputs = emc.run_kmodel(iris, [5.1, 3.8, 1.9, 0.4])
    assert len(outputs) == 1 and np.asarray(outputs[0]).size == 3


def test_emc_run_with_a_complex_npy_is_a_one_line_error(tmp_path):
    path = reference_path("kmodel-v3", "nncase_iris.kmodel")
    np.save(tmp_path / "complex.npy", np.ones(4, np.complex64))
    assert_one_line_error(emc_cli("run", path, tmp_path / "complex.npy"), "complex.npy", "complex numbers")
