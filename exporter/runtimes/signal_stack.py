"""Keep the main thread's alternate signal stack valid after OpenVINO's CPU plugin.

OpenVINO's CPU plugin installs an alternate signal stack (``sigaltstack``) on the thread
that creates it and frees that memory when the plugin is unloaded, without disabling it.
CPython installs its signal handlers with ``SA_ONSTACK``, so the next SIGTERM/SIGINT a Python
handler catches is delivered onto freed memory and the process dies with SIGSEGV instead of
saving its checkpoint (measured: ``tlx optimize`` then a SIGTERM during a distillation in the
same process; the plugin's ``create_plugin_engine`` is the caller of ``sigaltstack``).
After each compile, the thread's alternate stack is replaced by one this module owns for
the life of the process, so whatever handler runs on it has valid memory.
"""

from __future__ import annotations

import ctypes
import sys

_SS_DISABLE = 2
_MIN_SIZE = 64 * 1024
_KEEP: list[ctypes.Array[ctypes.c_char]] = []  # never freed: threads may point at them


class _StackT(ctypes.Structure):
    _fields_ = (
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    )


def own_signal_stack() -> bool:
    """Replace this thread's alternate signal stack (if any) by one that is never freed.

    Returns:
        True when a stack was replaced; False when there was none, or on a platform without
        ``sigaltstack`` (nothing to fix there).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = _StackT()
        if libc.sigaltstack(None, ctypes.byref(current)) != 0:
            return False
        if current.ss_flags & _SS_DISABLE or not current.ss_sp:
            return False
        if _KEEP and current.ss_sp == ctypes.addressof(_KEEP[-1]):
            return False  # already ours
        buf = ctypes.create_string_buffer(max(int(current.ss_size), _MIN_SIZE))
        new = _StackT(ctypes.addressof(buf), 0, len(buf))
        if libc.sigaltstack(ctypes.byref(new), None) != 0:
            return False
        _KEEP.append(buf)
        return True
    except (OSError, AttributeError):  # no libc symbol: nothing we can do, nothing to fix
        return False
