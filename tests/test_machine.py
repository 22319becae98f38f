"""optima.machine.cpu_identity: a CPU named precisely enough to tell two machines apart."""

from optima.machine import cpu_identity

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
"""


def test_model_name_with_family_and_model_of_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_identity(path) == "AMD EPYC (family 26, model 2)"


def test_without_numbers_or_without_the_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert cpu_identity(path) == "Some ARM core"
    assert cpu_identity(tmp_path / "missing") is None
