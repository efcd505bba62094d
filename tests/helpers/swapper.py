"""A hostile dropper, for tests: it keeps its folder open and, timed by inotify, swaps the
folder's sub-folders for symbolic links to a folder it must never get, while the master
copies or removes the drop, wherever the drop has been moved to (inotify watches and
the descriptors it holds follow the folders, not their paths).

    python -m tests.helpers.swapper DROP TARGET HOLD MODE SKIP

Once SKIP events have passed, each event makes the sub-folders of the folder it happened
in links to TARGET (the real ones wait in HOLD, on the same filesystem):
  copy    a file of the drop opened: its folder's sub-folders were checked by then, by
          a master that lists a folder and checks its entries before copying its files;
  flip    a folder or file opened or read: its folder's sub-folders flip between the
          real folder and a link, again and again, so whatever the master checked may
          have changed by the time it opens it;
  remove  a file of the drop deleted (the master removing a registered drop).
Prints "ready" once it watches; when its stdin closes it prints {"events", "swaps"}.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import struct
import sys
import time
from pathlib import Path

IN_ACCESS, IN_OPEN, IN_DELETE, IN_ISDIR = 0x1, 0x20, 0x200, 0x40000000
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then the name, len bytes)
TRIGGERS = {"copy": IN_OPEN, "flip": IN_OPEN | IN_ACCESS, "remove": IN_DELETE}
FLIP_SECONDS = 0.0002  # between two flips: the master must get some work done too
FLIP_FOR = 5.0  # a drop is answered well within this; stop burning a core after it


class Sub:
    """A sub-folder of the drop, in its folder (`fd`) under `name`, or held as `held`."""

    def __init__(self, fd: int, name: str, held: str) -> None:
        self.fd, self.name, self.held, self.linked = fd, name, held, False

    def flip(self, target: str, hold_fd: int) -> bool:
        try:
            if self.linked:
                os.unlink(self.name, dir_fd=self.fd)
                os.rename(self.held, self.name, src_dir_fd=hold_fd, dst_dir_fd=self.fd)
            else:
                os.rename(self.name, self.held, src_dir_fd=self.fd, dst_dir_fd=hold_fd)
                os.symlink(target, self.name, dir_fd=self.fd)
        except OSError:
            return False  # the master removed or moved it first
        self.linked = not self.linked
        return True


def main(argv: list[str]) -> int:
    drop, target, hold, mode, skip = Path(argv[0]), argv[1], Path(argv[2]), argv[3], int(argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    inotify = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if inotify < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    hold_fd = os.open(hold, os.O_RDONLY | os.O_DIRECTORY)
    folders: dict[int, list[Sub]] = {}  # watch -> the sub-folders of its folder
    for folder, subs, _files in os.walk(drop):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        wd = libc.inotify_add_watch(inotify, os.fsencode(folder), TRIGGERS[mode])
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        folders[wd] = [Sub(fd, name, f"held-{os.getpid()}-{wd}-{name}") for name in subs]
    print("ready", flush=True)

    events = swaps = 0
    flipping: list[Sub] = []
    flip_until = 0.0
    poller = select.poll()
    poller.register(inotify, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    while True:
        busy = flipping and time.monotonic() < flip_until
        ready = dict(poller.poll(0 if busy else None))
        if inotify in ready:
            for wd, mask, named in watches_hit(inotify, TRIGGERS[mode]):
                if wd not in folders or (mode == "copy" and (mask & IN_ISDIR or not named)):
                    continue
                events += 1
                if events <= skip:
                    continue
                if mode != "flip":
                    swaps += sum(sub.flip(target, hold_fd) for sub in folders.pop(wd))
                else:
                    if not flipping:
                        flip_until = time.monotonic() + FLIP_FOR
                    flipping += folders.pop(wd)
        if sys.stdin.fileno() in ready:
            break
        if busy:
            swaps += sum(sub.flip(target, hold_fd) for sub in flipping)
            time.sleep(FLIP_SECONDS)
    print(json.dumps({"events": events, "swaps": swaps}), flush=True)
    return 0


def watches_hit(inotify: int, wanted: int) -> list[tuple[int, int, bool]]:
    """The events waiting, of the kinds wanted: (watch, mask, about an entry by name)."""
    try:
        data = os.read(inotify, 1 << 16)
    except BlockingIOError:
        return []
    hit, offset = [], 0
    while offset < len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        offset += EVENT.size + length
        if mask & wanted:
            hit.append((wd, mask, length > 0))
    return hit


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
