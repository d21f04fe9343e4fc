"""The shared child-process runner: a hang ends the test with the child's Python stack."""

import textwrap

import pytest

from helpers import ROOT, run_cli


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


def test_a_hung_test_fails_with_every_threads_stack(tmp_path, pytestconfig):
    assert float(pytestconfig.getini("timeout")) > 0  # every test has one (pyproject.toml)
    # the project's pytest settings, with the timeout shortened to 2 s
    test_file = tmp_path / "test_hangs.py"
    test_file.write_text(
        textwrap.dedent("""
            import threading
            import time

            def helper_waits():
                time.sleep(60)

            def main_waits():
                time.sleep(60)

            def test_hangs():
                threading.Thread(target=helper_waits, daemon=True).start()
                main_waits()

            def test_after_it():
                pass
        """)
    )
    proc = run_cli(
        "-m", "pytest", str(test_file), "-c", str(ROOT / "pyproject.toml"), "--rootdir",
        str(tmp_path), "-p", "no:cacheprovider", "--timeout=2", timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Timeout" in out and "1 failed, 1 passed" in out  # the session went on
    assert "def main_waits" in out  # the hung thread's traceback, through main_waits
    assert "in helper_waits" in out  # and the other thread's stack
