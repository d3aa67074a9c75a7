"""
The daemon's memory: glibc's malloc arenas limited (L{limit_arenas}).

glibc gives each new thread a malloc arena of its own, up to eight per core,
and every arena keeps what was freed in it for later instead of giving it
back.  The daemon's threads (libvirt's pool, with a connection per compute
host, and adbapi's SQLite pool) thus spread the same data over many
arenas: at 10,000 VMs on 100 hosts (C{bench/api.py --vms 10000 --hosts 100
--starts 200}) its resident memory was 250 MB with glibc's default, 231 MB
with two arenas, latency unchanged.
"""

from __future__ import annotations

import ctypes
import os

#: mallopt's parameter for the arena limit (glibc's malloc.h).
M_ARENA_MAX = -8


def limit_arenas(count: int = 2) -> bool:
    """
    Limit glibc's malloc arenas to C{count} for the threads created from
    now on, unless the environment's C{MALLOC_ARENA_MAX} chose already.

    @return: whether the limit was set (C{False} where the C library has
        no C{mallopt}: not glibc).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_ARENA_MAX, count))
