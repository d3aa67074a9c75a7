"""Cluster state is derived from its VMs' states."""

from twisted.trial.unittest import TestCase

from comet.model.clusters import cluster_state


class ClusterStateTests(TestCase):
    def test_states(self):
        self.assertEqual(cluster_state([]), "empty")
        self.assertEqual(cluster_state(["running", "running"]), "running")
        self.assertEqual(cluster_state(["shutoff", "paused"]), "stopped")
        self.assertEqual(cluster_state(["running", "shutoff"]), "partial")
