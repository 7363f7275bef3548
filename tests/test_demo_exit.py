"""The demo leaves at once when the user quits, yet finishes what it was storing."""

from __future__ import annotations

from pathlib import Path

from helpers import run_python

ROOT = Path(__file__).resolve().parent.parent


def test_leave_now_waits_for_work_in_progress_then_exits_with_the_code(
    tmp_path: Path,
) -> None:
    # Prepare: a message still being stored on a worker thread when the app
    # has returned (it lands 0.3 s later).
    stored = tmp_path / "message.txt"
    script = (
        "import threading, time\n"
        "from cli.demo_cmd import _leave_now\n"
        "def store():\n"
        "    time.sleep(0.3)\n"
        f"    open({str(stored)!r}, 'w').write('see you')\n"
        "threading.Thread(target=store).start()\n"
        "print('screen restored', flush=False)\n"
        "_leave_now(3)\n"
        "raise SystemExit('not reached')\n"
    )

    # Execute
    done = run_python(script)

    # Assert: the code the app ended with, the message stored, stdout flushed
    assert done.returncode == 3, done.stderr
    assert stored.read_text() == "see you"
    assert done.stdout == "screen restored\n"
