"""Fault points armed through a file: a long-lived worker is armed and disarmed without a
restart, as the UI retry test does."""

from __future__ import annotations

import pytest

from infra import faults


def test_a_point_listed_in_the_fault_file_raises_until_the_file_is_removed(tmp_path, monkeypatch):
    armed_file = tmp_path / "armed"
    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.setenv(faults.FILE_ENV, str(armed_file))
    monkeypatch.setenv(faults.MODE_ENV, "raise")
    faults.fault_point("pretrain.start")  # no file yet: a no-op

    armed_file.write_text("corpus.write\npretrain.start\n")
    with pytest.raises(faults.InjectedFault, match="pretrain.start"):
        faults.fault_point("pretrain.start")
    faults.fault_point("pretrain.other")  # not listed: a no-op

    armed_file.unlink()  # the cause fixed
    faults.fault_point("pretrain.start")
