"""benchmarks/options.py: a comma-separated option of names, as every benchmark script reads one."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.options import names_option

ALLOWED = ["RealNVP", "NSF"]


def test_names_are_stripped_kept_in_order_and_taken_once():
    assert names_option(argparse.ArgumentParser(), "--peers", " NSF, RealNVP,NSF,, ", ALLOWED) == ["NSF", "RealNVP"]


@pytest.mark.parametrize("text, said", [("NSF,Glow", "--peers: unknown Glow; choose from RealNVP, NSF"),
                                        (" , ", "--peers: none given; choose from RealNVP, NSF")])
def test_an_unknown_name_or_none_is_one_line_and_exit_status_2(capsys, text, said):
    with pytest.raises(SystemExit) as stop:
        names_option(argparse.ArgumentParser(prog="bench"), "--peers", text, ALLOWED)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"bench: error: {said}"
