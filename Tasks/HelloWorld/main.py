"""HelloWorld: the smallest useful task. Appends a timestamped line to Output/hello.txt every minute."""

import os
from datetime import datetime
from pathlib import Path

OUTPUT = Path(os.environ.get("TASK_OUTPUT_DIR", Path(__file__).parent / "Output"))


def initialize():
    OUTPUT.mkdir(exist_ok=True)
    return f"HelloWorld will write to {OUTPUT / 'hello.txt'}"


def main():
    stamp = datetime.now().isoformat(timespec="seconds")
    with open(OUTPUT / "hello.txt", "a", encoding="utf-8") as f:
        f.write(f"{stamp} hello from run {os.environ.get('TASK_RUN_ID', '?')}\n")
    print("wrote one line")  # stdout goes to logs/tasks/HelloWorld.log
    return f"hello at {stamp}"
