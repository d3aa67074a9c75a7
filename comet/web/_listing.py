"""
L{EncodedListing}: the JSON text of a long list, each entry's text kept while
the values it is made from are the same.

A list of 10,000 VMs spent most of its time making a dict per VM and
encoding ~800 KB of JSON, although from one request to the next almost no
entry changes.  Here each entry's encoded text is kept with the values it
was made from (for a VM: its record and its state), and used again only if
they are the same: by identity, which is what the store's read cache gives
while no row changed, or else by equality.  So nothing needs to say when an
entry is stale: a changed record (a rename, a new host, any column) or state
makes a new text at once, and a VM no longer listed is not listed.

The text is that of the same list given to the encoder whole: C{[}, the
entries joined by C{", "}, C{]} (C{json}'s default separators).

Everything here runs in the reactor thread, with no wait between reading
and writing the kept entries.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable

#: Lists (e.g. clusters) whose entries are kept at most; the least recently
#: listed are forgotten first.
GROUPS = 16


class EncodedListing:
    """
    @param encode: C{encode(value) -> str}, the JSON encoder every answer uses.
    @param make: C{make(*sources) -> value}, an entry from its sources.
    @param groups: how many lists' entries to keep.
    """

    def __init__(self, encode: Callable[[Any], str], make: Callable[..., Any],
                 groups: int = GROUPS):
        self._encode = encode
        self._make = make
        self._groups = groups
        #: List -> entry key -> (sources, encoded entry).
        self._kept: OrderedDict[Hashable, dict[Hashable, tuple[tuple, bytes]]] = OrderedDict()

    def body(self, group: Hashable, entries: Iterable[tuple],
             key: Callable[[tuple], Hashable]) -> bytes:
        """
        The UTF-8 JSON text of the list of C{make(*sources)} for each
        C{sources} tuple of C{entries}, in order; C{key(sources)} names the
        entry (a VM's uuid) within C{group} (a cluster).  Only the entries of
        this call are kept for the next one of C{group}.
        """
        before = self._kept.pop(group, None) or {}
        kept: dict[Hashable, tuple[tuple, bytes]] = {}
        parts = []
        encode, make = self._encode, self._make
        for sources in entries:
            name = key(sources)
            entry = before.get(name)
            if entry is None or entry[0] != sources:
                entry = (sources, encode(make(*sources)).encode("utf-8"))
            kept[name] = entry
            parts.append(entry[1])
        self._kept[group] = kept
        while len(self._kept) > self._groups:
            self._kept.popitem(last=False)
        return b"[" + b", ".join(parts) + b"]"
