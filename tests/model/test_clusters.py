"""Cluster state is derived from its VMs' states; the actions valid in each."""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.model.clusters import CLUSTER_ACTIONS, STATES, Cluster, ClusterModel, cluster_state
from comet.store import Clusters
from tests._api import temp_database


class ClusterStateTests(TestCase):
    def test_states(self):
        self.assertEqual(cluster_state([]), "empty")
        self.assertEqual(cluster_state(["running", "running"]), "running")
        self.assertEqual(cluster_state(["shutoff", "paused"]), "stopped")
        self.assertEqual(cluster_state(["running", "shutoff"]), "partial")


class ClusterActionTests(TestCase):
    """The cluster state machine: which action is valid in which state."""

    def test_actions_of_each_state(self):
        vm_states = {"empty": (), "running": ("running",), "stopped": ("shutoff",),
                     "partial": ("running", "shutoff")}
        self.assertEqual(set(vm_states), set(STATES))
        offered = {state: Cluster("lab", "", 0, vms).actions for state, vms in vm_states.items()}
        self.assertEqual(offered, {"empty": [], "running": ["stop"], "stopped": ["start", "stop"],
                                   "partial": ["start", "stop"]})
        for state, actions in offered.items():
            self.assertEqual(actions, [a for a in CLUSTER_ACTIONS if state in CLUSTER_ACTIONS[a]])

    async def test_check_action(self):
        """
        An action not valid in the cluster's state is a Conflict naming
        both; a valid one answers the cluster.
        """
        model = ClusterModel(Clusters(temp_database(self)), Clock())
        await model.create("lab")
        with self.assertRaises(Conflict) as caught:
            await model.check_action("lab", "start")
        self.assertEqual(caught.exception.reason, "cluster 'lab' is empty; start is not possible")

        async def stopped(record):
            return ("shutoff",)

        model.vm_states = stopped
        self.assertEqual((await model.check_action("lab", "start")).state, "stopped")
