"""The shared child-process runner: a hang ends the test with the child's Python stack."""

import pytest

from helpers import run_cli


def test_a_hung_child_is_stopped_and_its_stack_shown(tmp_path):
    script = tmp_path / "hangs.py"
    script.write_text("import time\n\ndef wait_forever():\n    time.sleep(600)\n\nwait_forever()\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_cli(str(script), timeout=2)
    message = str(failed.value)
    assert "still running after 2 s" in message
    assert "wait_forever" in message and "hangs.py" in message  # faulthandler's dump


def test_a_finished_child_gives_its_output_and_exit_code():
    proc = run_cli("-c", "import sys; print('out'); sys.exit(3)", timeout=60)
    assert (proc.returncode, proc.stdout) == (3, "out\n")
