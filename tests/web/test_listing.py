"""
Tests for L{comet.web._listing.EncodedListing}: a list's JSON text from kept
entries, byte for byte what the encoder gives for the whole list, each entry
made again as soon as what it is made from changes.
"""

from __future__ import annotations

import json

import attrs
from twisted.trial.unittest import TestCase

from comet.web._listing import GROUPS, EncodedListing


@attrs.frozen
class Row:
    key: str
    name: str


ENCODER = json.JSONEncoder(ensure_ascii=False)


class EncodedListingTests(TestCase):
    def setUp(self):
        self.made = []

        def make(row: Row, state: str) -> dict:
            self.made.append(row.key)
            return {"name": row.name, "state": state, "none": None, "n": 1.5}

        self.make = make
        self.listing = EncodedListing(ENCODER.encode, make)

    def body(self, entries, group="g"):
        return self.listing.body(group, entries, lambda sources: sources[0].key)

    def expected(self, entries) -> bytes:
        return ENCODER.encode([self.make(*sources) for sources in entries]).encode("utf-8")

    def test_text_of_the_whole_list(self):
        """Byte for byte the encoder's text of the list, non-ASCII and empty included."""
        entries = [(Row("1", "web"), "running"), (Row("2", "dé\u00e9\U0001f600\"\\"), "shutoff")]
        self.assertEqual(self.body(entries), self.expected(entries))
        self.assertEqual(self.body(entries), self.expected(entries))  # from kept entries
        self.assertEqual(self.body([]), b"[]")
        self.assertEqual(json.loads(self.body(entries))[1]["name"], "dé\u00e9\U0001f600\"\\")

    def test_unchanged_entries_kept(self):
        """Only new or changed entries are made again; equal sources count as unchanged."""
        rows = [Row(str(i), f"vm-{i}") for i in range(5)]
        self.body([(r, "running") for r in rows])
        self.made.clear()
        copies = [(Row(r.key, r.name), "running") for r in rows]  # equal, not the same objects
        self.assertEqual(self.body(copies), self.expected(copies))
        self.assertEqual(self.made, [str(i) for i in range(5)])  # by expected() only
        self.made.clear()
        self.body(copies)
        self.assertEqual(self.made, [])

    def test_changes_show_at_once(self):
        """A changed state or record (a rename) makes that entry again, at once."""
        rows = [Row("1", "a"), Row("2", "b"), Row("3", "c")]
        self.body([(r, "running") for r in rows])
        self.made.clear()
        changed = [(rows[0], "paused"), (Row("2", "renamed"), "running"), (rows[2], "running")]
        text = self.body(changed)
        self.assertEqual(self.made, ["1", "2"])
        self.assertEqual([e["name"] for e in json.loads(text)], ["a", "renamed", "c"])
        self.assertEqual([e["state"] for e in json.loads(text)], ["paused", "running", "running"])
        self.assertEqual(text, self.expected(changed))

    def test_removed_entries_forgotten(self):
        """An entry no longer listed is not listed, and not kept: back, it is made anew."""
        a, b = Row("1", "a"), Row("2", "b")
        self.body([(a, "running"), (b, "running")])
        self.assertEqual(json.loads(self.body([(b, "running")])), [self.make(b, "running")])
        self.made.clear()
        self.body([(a, "running"), (b, "running")])
        self.assertEqual(self.made, ["1"])

    def test_groups_apart_and_bounded(self):
        """Each group keeps its own entries; only the last L{GROUPS} groups are kept."""
        row = Row("1", "a")
        self.body([(row, "running")], group="one")
        self.made.clear()
        self.body([(row, "paused")], group="two")
        self.body([(row, "running")], group="one")
        self.assertEqual(self.made, ["1"])
        for i in range(GROUPS):
            self.body([(Row("x", "x"), "running")], group=f"other-{i}")
        self.made.clear()
        self.body([(row, "running")], group="one")
        self.assertEqual(self.made, ["1"])
