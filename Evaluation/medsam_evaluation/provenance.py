"""How a result was made: the machine, the commit and the command line, for the reports' headers."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Optional


def machine_description(device: Optional[str] = None) -> str:
    import multiprocessing

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {multiprocessing.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
    try:
        import torch

        text += f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except ImportError:
        pass
    if device:
        text += f"; model on {device}"
    return text


def git_commit() -> str:
    """The short commit of the checkout holding this package ("" outside one)."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                              encoding="utf-8", errors="replace", timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def today(with_time: bool = False) -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def command_line(subcommand: str) -> Optional[str]:
    """``medsam-segment SUBCOMMAND ...`` as this process was started, or None without arguments."""
    return f"medsam-segment {subcommand} " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None
