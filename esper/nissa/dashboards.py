"""TensorBoard for people: the command to type, or a server on 127.0.0.1 started and stopped by its own handle."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

def tensorboard_command(logdir: str | Path, port: int = 6006) -> str:
    """What to type to look at `logdir` (loopback only; reach it from elsewhere through an SSH tunnel)."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))} --host 127.0.0.1 --port {port}"


class TensorBoard:
    """A TensorBoard server over `logdir` on 127.0.0.1:`port`; `with TensorBoard(...) as tb:` stops it on exit."""

    def __init__(self, logdir: str | Path, port: int = 6006, startup_timeout_s: float = 60.0) -> None:
        self.logdir, self.port = Path(logdir), port
        self.url = f"http://127.0.0.1:{port}"
        # Python data loading (no Rust data server process), a reload every 5 s so a running sweep's curves move.
        cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir), "--host", "127.0.0.1",
               "--port", str(port), "--load_fast=false", "--reload_interval", "5"]
        self._log = open(self.logdir / "tensorboard.log", "ab") if self.logdir.is_dir() else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_up(startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TensorBoard exited with {self.proc.returncode} (port {self.port} in use?); "
                                   f"see {self.logdir / 'tensorboard.log'}")
            try:
                with urllib.request.urlopen(self.url + "/data/logdir", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"TensorBoard did not answer on {self.url} within {timeout_s:.0f} s") from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> "TensorBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
