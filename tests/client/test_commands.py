"""
The real C{comet} command (installed by C{pip install ./client} in its own
virtualenv) against a real C{twistd -n comet} daemon on the embedded
default configuration: every command group, its exit codes, C{--json}
equal to what the API answers, tables, a task's progress bar, the login
file and shell completion.  One daemon for the whole class.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import termios
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.client._cli import PASSWORD, Comet, Daemon, client_venv


class DaemonCase(SynchronousTestCase):
    daemon: Daemon

    @classmethod
    def setUpClass(cls):
        client_venv()
        cls.daemon = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def comet(self) -> Comet:
        """The command, logged in through the environment with the admin's token."""
        return Comet(self, self.daemon.url, self.daemon.token)

    def made(self, *vms: str, template: str = "t128"):
        """Clusters with these VMs (C{CLUSTER/VM}), made through the API directly (setup, not the test)."""
        for uri, body in [("/templates", {"name": template, "memory": 128})] + [
            item for ref in vms for item in (("/cluster", {"name": ref.split("/")[0]}),
                                             (f"/cluster/{ref.split('/')[0]}/vms",
                                              {"template": template, "name": ref.split("/")[1]}))
        ]:
            code, answer = self.daemon.api("POST", uri, body)
            self.assertIn(code, (201, 409), answer)

    def assertExit(self, done, code: int):
        self.assertEqual(done.returncode, code, f"stdout: {done.stdout}\nstderr: {done.stderr}")


class InstallTests(SynchronousTestCase):
    def test_apart_from_the_daemon(self):
        """The client's virtualenv has the command and none of the daemon (Twisted, libvirt, Comet)."""
        python = os.path.join(client_venv(), "bin", "python")
        for module in ("twisted", "libvirt", "comet"):
            done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, cwd="/",
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            self.assertNotEqual(done.returncode, 0, f"{module} is importable in the client's venv")
        self.assertTrue(os.access(os.path.join(client_venv(), "bin", "comet"), os.X_OK))


class _Login:
    def test_token_login_file_0600(self):
        """C{comet login URL --token} keeps URL and token in a file created 0600 (even under umask 0)."""
        comet = Comet(self)
        done = comet("login", self.daemon.url, "--token", self.daemon.token)
        self.assertExit(done, 0)
        self.assertEqual(stat.S_IMODE(os.stat(comet.login_file).st_mode), 0o600)
        with open(comet.login_file) as f:
            self.assertEqual(json.load(f), {"url": self.daemon.url, "token": self.daemon.token})
        self.assertEqual(comet.json("host", "list"), self.daemon.get("/hosts"))
        # umask 0 would make a file created 0666 world-readable; ours is 0600 from its creation.
        other = Comet(self)
        done = other("login", self.daemon.url, "--token", self.daemon.token,
                     umask=0)
        self.assertExit(done, 0)
        self.assertEqual(stat.S_IMODE(os.stat(other.login_file).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(other.login_file)).st_mode), 0o700)

    def test_password_login(self):
        """Without C{--token}, login asks for user and password, checks them, and they work after."""
        comet = Comet(self)
        done = comet("login", self.daemon.url, stdin=f"alice\n{PASSWORD}\n")
        self.assertExit(done, 0)
        self.assertEqual(stat.S_IMODE(os.stat(comet.login_file).st_mode), 0o600)
        self.assertEqual(comet.json("cluster", "list"), self.daemon.get("/cluster"))

    def test_refused_login_keeps_nothing(self):
        """A wrong token: exit 1 with the API's reason, and no login file."""
        comet = Comet(self)
        done = comet("login", self.daemon.url, "--token", "comet_wrong")
        self.assertExit(done, 1)
        self.assertIn("login refused", done.stderr)
        self.assertFalse(os.path.exists(comet.login_file))

    def test_environment_overrides(self):
        """C{COMET_URL} and C{COMET_TOKEN} win over the stored login."""
        comet = Comet(self)
        self.assertExit(comet("login", self.daemon.url, "--token", self.daemon.token), 0)
        with open(comet.login_file) as f:
            stored = json.load(f)
        stored["url"] = "http://127.0.0.1:9"          # nothing listens there
        with open(comet.login_file, "w") as f:
            json.dump(stored, f)
        self.assertExit(comet("host", "list"), 3)
        self.assertExit(comet("host", "list", env={"COMET_URL": self.daemon.url}), 0)
        self.assertExit(comet("host", "list", env={"COMET_URL": self.daemon.url,
                                                   "COMET_TOKEN": "comet_wrong"}), 1)
        self.assertExit(comet("logout"), 0)
        self.assertFalse(os.path.exists(comet.login_file))


class _ExitCodes:
    def test_not_logged_in(self):
        done = Comet(self)("cluster", "list")
        self.assertExit(done, 2)
        self.assertIn("comet login URL", done.stderr)

    def test_bad_usage(self):
        comet = self.comet()
        self.assertExit(comet("vm", "show", "no-slash"), 2)
        self.assertExit(comet("cluster", "frobnicate"), 2)
        self.assertExit(comet("volume", "create", "p/v"), 2)     # neither --capacity nor --url

    def test_api_refusal_prints_reason(self):
        code, body = self.daemon.api("GET", "/cluster/nosuch")
        self.assertEqual(code, 404)
        done = self.comet()("cluster", "show", "nosuch")
        self.assertExit(done, 1)
        self.assertEqual(done.stderr.strip(), f"Error: {body['reason']}")

    def test_unreachable(self):
        done = Comet(self, "http://127.0.0.1:9", "t")("cluster", "list")
        self.assertExit(done, 3)
        self.assertIn("cannot reach the Comet daemon at http://127.0.0.1:9", done.stderr)


class _Compute:
    """C{comet template}, C{cluster}, C{vm} and C{host}."""

    def test_template(self):
        comet = self.comet()
        made = comet.json("template", "create", "small", "--memory", "128", "--cpus", "1")
        self.assertEqual(made, self.daemon.get("/templates/small"))
        self.assertEqual(comet.json("template", "list"), self.daemon.get("/templates"))
        table = comet("template", "list")
        self.assertExit(table, 0)
        self.assertRegex(table.stdout, r"NAME\s+MEMORY\s+CPUS\s+DISK")
        self.assertRegex(table.stdout, r"small\s+128\s+1\s+-")
        changed = comet.json("template", "update", "small", "--memory", "256")
        self.assertEqual(changed["memory"], 256)
        self.assertEqual(comet.json("template", "show", "small"), self.daemon.get("/templates/small"))
        done = comet("template", "delete", "small")
        self.assertExit(done, 0)
        self.assertEqual(self.daemon.api("GET", "/templates/small")[0], 404)

    def test_cluster_and_vm(self):
        comet = self.comet()
        self.assertExit(comet("template", "create", "tiny", "--memory", "128", "--cpus", "1"), 0)
        made = comet.json("cluster", "create", "lab", "--description", "the lab")
        self.assertEqual(made, self.daemon.get("/cluster/lab"))
        self.assertEqual(comet.json("cluster", "list"), self.daemon.get("/cluster"))
        vm = comet.json("vm", "create", "lab", "--template", "tiny")
        self.assertEqual(vm["name"], "tiny-1")
        self.assertEqual(vm, self.daemon.get("/cluster/lab/vms/tiny-1"))
        self.assertEqual(comet.json("vm", "create", "lab/web", "-t", "tiny")["name"], "web")
        self.assertEqual(comet.json("vm", "list", "lab"), self.daemon.get("/cluster/lab/vms"))
        table = comet("vm", "list", "lab")
        self.assertRegex(table.stdout, r"NAME\s+STATE\s+HOST\n")
        self.assertRegex(table.stdout, r"tiny-1\s+shutoff\s+-")
        shown = comet("vm", "show", "lab/tiny-1")
        self.assertRegex(shown.stdout, r"actions\s+start\s*\n")

        started = comet.json("vm", "start", "lab/tiny-1")
        self.assertEqual(started["state"], "running")
        self.assertEqual(started, self.daemon.get("/cluster/lab/vms/tiny-1"))
        for action, state in (("suspend", "paused"), ("resume", "running"), ("reset", "running"),
                              ("poweroff", "shutoff"), ("start", "running")):
            self.assertEqual(comet.json("vm", action, "lab/tiny-1")["state"], state, action)
        refused = comet("vm", "resume", "lab/tiny-1")
        self.assertExit(refused, 1)
        self.assertIn("Error: VM 'tiny-1'", refused.stderr)

        shot = os.path.join(comet.home, "shot.png")
        self.assertExit(comet("vm", "screenshot", "lab/tiny-1", "-o", shot), 0)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        # A 202: the progress bar's end state on stderr, the outcome on stdout.
        stopped = comet("vm", "stop", "lab/tiny-1")
        self.assertExit(stopped, 0)
        task = self.daemon.get("/tasks?limit=1")[0]
        self.assertEqual(task["status"], "finished")
        self.assertIn(f"task {task['id']}", stopped.stderr)
        self.assertIn("100%", stopped.stderr)
        self.assertIn(task["message"], stopped.stderr.replace("\n", " ").replace("  ", " ") + task["message"][:0])
        self.assertEqual(stopped.stdout.strip(), f"task {task['id']} finished: {task['message']}")
        self.assertEqual(self.daemon.get("/cluster/lab/vms/tiny-1")["state"], "shutoff")

        # Cluster start and stop: tasks, followed; --json prints the final task.
        final = comet.json("cluster", "start", "lab")
        self.assertEqual(final, self.daemon.get(final["href"]))
        self.assertEqual(final["status"], "finished")
        self.assertEqual(self.daemon.get("/cluster/lab")["state"], "running")
        # --no-wait: the task as the 202 gave it, and how to follow it.
        started = comet("cluster", "stop", "lab", "--no-wait")
        self.assertExit(started, 0)
        self.assertRegex(started.stdout, r"status\s+(running|finished)")
        task_id = int(started.stdout.split()[1])
        self.assertIn(f"comet task wait {task_id}", started.stderr)
        waited = comet.json("task", "wait", str(task_id))
        self.assertEqual(waited, self.daemon.get(f"/tasks/{task_id}"))
        self.assertEqual(waited["status"], "finished")

        updated = comet.json("cluster", "update", "lab", "--description", "changed")
        self.assertEqual(updated["description"], "changed")
        self.assertEqual(comet.json("vm", "update", "lab/web", "--memory", "256")["memory"], 256)
        self.assertExit(comet("vm", "delete", "lab/web"), 0)
        self.assertEqual(self.daemon.api("GET", "/cluster/lab/vms/web")[0], 404)
        refused = comet("cluster", "delete", "lab")
        self.assertExit(refused, 1)
        self.assertEqual(refused.stderr.strip(), "Error: " + self.daemon.api("DELETE", "/cluster/lab", {})[1]["reason"])
        self.assertExit(comet("cluster", "delete", "lab", "--force"), 0)
        self.assertEqual(self.daemon.api("GET", "/cluster/lab")[0], 404)

    def test_nics(self):
        """C{--nic} on a template (networks) and a VM (networks and MACs): what the API made."""
        comet = self.comet()
        made = comet.json("template", "create", "wired", "--memory", "128", "--nic", "private")
        self.assertEqual(made["nics"], [{"network": "private"}])
        self.assertEqual(made, self.daemon.get("/templates/wired"))
        self.assertExit(comet("cluster", "create", "nets"), 0)
        vm = comet.json("vm", "create", "nets/a", "-t", "wired",
                        "--nic", "private=52:54:00:12:34:56", "--nic", "private")
        self.assertEqual(vm, self.daemon.get("/cluster/nets/vms/a"))
        self.assertEqual([(n["network"], n["mac"]) for n in vm["nics"]][0],
                         ("private", "52:54:00:12:34:56"))
        self.assertEqual([n["network"] for n in vm["nics"]], ["private", "private"])
        # Without --nic, the template's.
        self.assertEqual([n["network"] for n in comet.json("vm", "create", "nets/b", "-t", "wired")["nics"]],
                         ["private"])
        changed = comet.json("template", "update", "wired", "--nic", "private", "--nic", "private")
        self.assertEqual(changed["nics"], [{"network": "private"}, {"network": "private"}])
        # A template's NICs have no MACs (its VMs share it): bad usage, nothing sent.
        self.assertExit(comet("template", "create", "macs", "--nic", "private=52:54:00:12:34:57"), 2)
        self.assertEqual(self.daemon.api("GET", "/templates/macs")[0], 404)
        refused = comet("vm", "create", "nets/c", "-t", "wired", "--nic", "nowhere")
        self.assertExit(refused, 1)
        self.assertEqual(refused.stderr.strip(), "Error: " + self.daemon.api(
            "POST", "/cluster/nets/vms", {"template": "wired", "name": "c",
                                          "nics": [{"network": "nowhere"}]})[1]["reason"])

    def test_cpu_model(self):
        """C{--cpu-model} on templates and VMs: what the API made; C{none} clears it."""
        comet = self.comet()
        made = comet.json("template", "create", "modern", "--memory", "128",
                          "--cpu-model", "Haswell-noTSX")
        self.assertEqual(made["cpu_model"], "Haswell-noTSX")
        self.assertEqual(made, self.daemon.get("/templates/modern"))
        self.assertExit(comet("cluster", "create", "cpus"), 0)
        self.assertEqual(comet.json("vm", "create", "cpus/a", "-t", "modern")["cpu_model"],
                         "Haswell-noTSX")
        vm = comet.json("vm", "create", "cpus/b", "-t", "modern", "--cpu-model", "none")
        self.assertIsNone(vm["cpu_model"])
        self.assertEqual(vm, self.daemon.get("/cluster/cpus/vms/b"))
        self.assertEqual(comet.json("vm", "update", "cpus/b", "--cpu-model", "Nehalem")["cpu_model"],
                         "Nehalem")
        self.assertIsNone(comet.json("template", "update", "modern", "--cpu-model", "none")["cpu_model"])
        refused = comet("vm", "update", "cpus/a", "--cpu-model", "host-model")
        self.assertExit(refused, 1)
        self.assertEqual(refused.stderr.strip(), "Error: " + self.daemon.api(
            "PUT", "/cluster/cpus/vms/a", {"cpu_model": "host-model"})[1]["reason"])

    def test_vm_nic(self):
        """C{comet vm nic add|list|rm}: what the API answers; the removal's task followed to its end."""
        comet = self.comet()
        self.made("nicd/v")
        added = comet.json("vm", "nic", "add", "nicd/v", "--network", "private",
                           "--mac", "52:54:00:AB:CD:EF")
        self.assertEqual(added, self.daemon.get("/cluster/nicd/vms/v/nics/52:54:00:ab:cd:ef"))
        self.assertEqual((added["device"], added["mac"]), ("eth0", "52:54:00:ab:cd:ef"))
        second = comet.json("vm", "nic", "add", "nicd/v", "--network", "private")
        self.assertEqual(second["device"], "eth1")
        self.assertEqual(comet.json("vm", "nic", "list", "nicd/v"),
                         self.daemon.get("/cluster/nicd/vms/v/nics"))
        table = comet("vm", "nic", "list", "nicd/v")
        self.assertExit(table, 0)
        self.assertRegex(table.stdout, r"DEVICE\s+NETWORK\s+MAC\s+BRIDGE")
        self.assertRegex(table.stdout, r"eth0\s+private\s+52:54:00:ab:cd:ef\s+cometb")
        self.assertExit(comet("vm", "nic", "rm", "nicd/v", "52:54:00:ab:cd:ef"), 0)
        self.assertEqual([(n["mac"], n["device"]) for n in self.daemon.get(
            "/cluster/nicd/vms/v/nics")], [(second["mac"], "eth0")])
        refused = comet("vm", "nic", "add", "nicd/v", "--network", "nowhere")
        self.assertExit(refused, 1)
        self.assertEqual(refused.stderr.strip(), "Error: " + self.daemon.api(
            "POST", "/cluster/nicd/vms/v/nics", {"network": "nowhere"})[1]["reason"])
        self.assertExit(comet("vm", "nic", "rm", "nicd/v", "02:00:00:00:00:01"), 1)
        self.assertExit(comet("vm", "nic", "add", "nicd/v"), 2)    # --network is needed

    def test_first_boot_seed_options(self):
        """
        C{--hostname}, C{--ssh-key FILE} and C{--user-data FILE} reach the API
        as its C{hostname}, C{ssh_keys} and C{user_data}: each refusal is the
        one the API gives that body (this daemon has no storage for a seed).
        """
        comet = self.comet()
        self.made("seeds/x")
        key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKZ1o0RvbwWFdgt3+8GOy2ybN7mNd0D6HoPFUdvt0Cyo me@laptop"
        keys = os.path.join(comet.home, "id.pub")
        with open(keys, "w") as f:
            f.write(f"# mine\n{key}\n\n")
        bad_keys = os.path.join(comet.home, "bad.pub")
        with open(bad_keys, "w") as f:
            f.write("ssh-ed25519 nonsense\n")
        base = {"template": "t128", "name": "y"}
        for args, stdin, body in (
            (["--hostname", "web-1", "--ssh-key", keys, "--user-data", "-"], "#cloud-config\n",
             {"hostname": "web-1", "ssh_keys": [key], "user_data": "#cloud-config\n"}),
            (["--hostname", "not_a_host"], None, {"hostname": "not_a_host"}),
            (["--ssh-key", bad_keys], None, {"ssh_keys": ["ssh-ed25519 nonsense"]}),
            (["--user-data", "-"], "nul\x00", {"user_data": "nul\x00"}),
        ):
            refused = comet("vm", "create", "seeds/y", "-t", "t128", *args, stdin=stdin)
            self.assertExit(refused, 1)
            code, answer = self.daemon.api("POST", "/cluster/seeds/vms", {**base, **body})
            self.assertIn(code, (400, 409), answer)
            self.assertEqual(refused.stderr.strip(), "Error: " + answer["reason"], args)
        self.assertEqual(self.daemon.api("GET", "/cluster/seeds/vms/y")[0], 404)

    def test_migrate(self):
        """C{comet vm migrate}: the API's refusal when there is no other host to go to."""
        comet = self.comet()
        self.made("mig/v")
        self.assertExit(comet("vm", "start", "mig/v"), 0)
        refused = comet("vm", "migrate", "mig/v", "--host", "local")
        self.assertExit(refused, 1)
        code, answer = self.daemon.api("POST", "/cluster/mig/vms/v/migrate", {"host": "local"})
        self.assertIn(code, (400, 409), answer)
        self.assertEqual(refused.stderr.strip(), "Error: " + answer["reason"])
        refused = comet("vm", "migrate", "mig/v")
        self.assertExit(refused, 1)
        self.assertEqual(refused.stderr.strip(), "Error: " + self.daemon.api(
            "POST", "/cluster/mig/vms/v/migrate", {})[1]["reason"])

    def test_console_url(self):
        """Without --serial: the console's URL, or the daemon's reason when it has none."""
        comet = self.comet()
        self.made("con/v")
        refused = comet("vm", "console", "con/v")
        self.assertExit(refused, 1)
        self.assertIn("Error: VM 'v'", refused.stderr)

    def test_serial_console_in_a_terminal(self):
        """
        C{--serial} attaches a pseudo-terminal to the console's websocket; the
        test driver has no serial console, so the daemon closes it saying
        why: the command prints that, exits 1, and leaves the terminal's
        modes as they were.
        """
        self.made("ser/v")
        self.assertEqual(self.daemon.api("POST", "/cluster/ser/vms/v/start", {})[0], 200)
        comet = self.comet()
        primary, secondary = pty.openpty()
        self.addCleanup(os.close, primary)
        before = termios.tcgetattr(secondary)
        process = subprocess.Popen([comet.executable, "vm", "console", "ser/v", "--serial"],
                                   env=comet.env, stdin=secondary, stdout=secondary, stderr=secondary)
        output = b""
        while process.poll() is None or select.select([primary], [], [], 0.5)[0]:
            if select.select([primary], [], [], 0.5)[0]:
                output += os.read(primary, 4096)
        self.assertEqual(termios.tcgetattr(secondary), before)
        os.close(secondary)
        self.assertEqual(process.returncode, 1, output)
        text = output.decode()
        self.assertIn("Connected to the serial console; Ctrl-] leaves.", text)
        self.assertIn("Serial console closed (the console closed: ", text)
        self.assertIn("virDomainOpenConsole", text.replace("\r\n", ""))

    def test_host(self):
        comet = self.comet()
        self.assertEqual(comet.json("host", "list"), self.daemon.get("/hosts"))
        self.assertEqual(comet.json("host", "show", "local"), self.daemon.get("/hosts/local"))
        table = comet("host", "list")
        self.assertRegex(table.stdout, r"local\s+connected\s+\d+")

    def test_host_maintenance_and_evacuate(self):
        """
        C{comet host maintenance HOST on|off} and C{comet host evacuate HOST
        [--fenced]}: --json is what the API answers; an evacuation is a task,
        followed; fenced on a host that answers is refused, with the reason.
        """
        comet = self.comet()
        self.addCleanup(self.daemon.api, "POST", "/hosts/local/maintenance", {"enabled": False})
        on = comet.json("host", "maintenance", "local", "on")
        self.assertEqual(on, self.daemon.get("/hosts/local"))
        self.assertTrue(on["maintenance"])
        self.assertIn("evacuate", on["actions"])
        final = comet.json("host", "evacuate", "local")
        self.assertEqual(final, self.daemon.get(final["href"]))
        self.assertEqual(final["status"], "finished", final)
        self.assertIn("evacuation of host 'local'", final["message"])
        refused = comet("host", "evacuate", "local", "--fenced")
        self.assertExit(refused, 1)
        self.assertIn("answers", refused.stderr)
        self.assertExit(comet("host", "maintenance", "local", "sideways"), 2)
        off = comet.json("host", "maintenance", "local", "off")
        self.assertFalse(off["maintenance"])
        self.assertEqual(list(off["actions"]), ["maintenance"])


class _Storage:
    """C{comet pool}, C{volume}, C{snapshot} and C{server} on a daemon without storage."""

    def test_empty_listings(self):
        comet = self.comet()
        self.assertEqual(comet.json("pool", "list"), self.daemon.get("/storagepools"))
        self.assertEqual(comet.json("server", "list"), self.daemon.get("/storageservers"))
        self.assertEqual(comet("pool", "list").stdout.strip(), "(none)")

    def test_refusals_name_the_reason(self):
        comet = self.comet()
        self.made("st/v")
        for args, (method, uri, body) in (
            (("pool", "show", "nope"), ("GET", "/storagepools/nope", None)),
            (("volume", "create", "nope/v1", "--capacity", "1"),
             ("POST", "/storagepools/nope/storagevolumes", {"name": "v1", "capacity": 1})),
            (("volume", "create", "nope/v1", "--url", "http://h/i.img", "--capacity", "1",
              "--format", "xz", "--sha256", "ab" * 32),
             ("POST", "/storagepools/nope/storagevolumes",
              {"name": "v1", "url": "http://h/i.img", "capacity": 1, "format": "xz",
               "sha256": "ab" * 32})),
            (("volume", "list", "nope"), ("GET", "/storagepools/nope/storagevolumes", None)),
            (("volume", "resize", "nope/v1", "--capacity", "4"),
             ("PUT", "/storagepools/nope/storagevolumes/v1", {"capacity": 4})),
            (("volume", "attach", "st/v", "nope/v1"),
             ("POST", "/cluster/st/vms/v/storages", {"pool": "nope", "vol": "v1"})),
            (("snapshot", "create", "st/v"), ("POST", "/cluster/st/vms/v/snapshots", {})),
            (("server", "show", "10.0.0.1"), ("GET", "/storageservers/10.0.0.1", None)),
            (("pool", "create", "p", "--server", "10.0.0.1", "--dataset", "tank/x"),
             ("POST", "/storagepools", {"name": "p", "server": "10.0.0.1", "dataset": "tank/x"})),
        ):
            code, answer = self.daemon.api(method, uri, body)
            self.assertGreaterEqual(code, 400, uri)
            done = comet(*args)
            self.assertExit(done, 1)
            self.assertEqual(done.stderr.strip(), f"Error: {answer['reason']}", args)
        self.assertEqual(comet.json("snapshot", "list", "st/v"), self.daemon.get("/cluster/st/vms/v/snapshots"))
        self.assertEqual(comet.json("vm", "storages", "st/v"), self.daemon.get("/cluster/st/vms/v/storages"))


class _Activity:
    """C{comet task} and C{comet audit}."""

    def test_tasks_and_audit(self):
        comet = self.comet()
        self.made("act/v")
        self.assertExit(comet("cluster", "start", "act", "--no-wait"), 0)
        # Both reads must see the same tasks: the start's may end between them.
        deadline = time.monotonic() + 60
        while any(t["status"] == "running" for t in self.daemon.get("/tasks")):
            self.assertLess(time.monotonic(), deadline, "the cluster start did not end")
            time.sleep(0.1)
        tasks = self.daemon.get("/tasks")
        self.assertEqual(comet.json("task", "list"), tasks)
        self.assertEqual(comet.json("task", "list", "--status", "finished", "--limit", "1"),
                         self.daemon.get("/tasks?status=finished&limit=1"))
        self.assertEqual(comet.json("task", "show", str(tasks[0]["id"])), self.daemon.get(tasks[0]["href"]))
        self.assertRegex(comet("task", "list").stdout, r"ID\s+STATUS\s+PROGRESS\s+MESSAGE")
        self.assertExit(comet("task", "show", "999999"), 1)
        self.assertEqual(comet.json("audit", "--limit", "5"), self.daemon.get("/auditlog?limit=5"))
        self.assertEqual(comet.json("audit", "--user", "admin", "--offset", "1"),
                         self.daemon.get("/auditlog?user=admin&offset=1"))
        self.assertRegex(comet("audit").stdout, r"POST\s+/cluster\s+201")


class _Completion:
    def complete(self, comet, shell, words, cword):
        env = {"_COMET_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        done = comet(env=env)
        self.assertExit(done, 0)
        return done.stdout

    def test_names(self):
        """bash and zsh complete cluster names and CLUSTER/VM from the API."""
        comet = self.comet()
        self.made("alpha/one", "alpha/two", "beta/three")
        self.assertEqual(self.complete(comet, "bash", "comet cluster show al", 3).split(), ["plain,alpha"])
        self.assertEqual(self.complete(comet, "bash", "comet vm start alpha/t", 3).split(), ["plain,alpha/two"])
        self.assertEqual(sorted(self.complete(comet, "bash", "comet vm show al", 3).split()),
                         ["plain,alpha/one", "plain,alpha/two"])
        self.assertEqual(self.complete(comet, "zsh", "comet vm show alpha/o", 3).split(),
                         ["plain", "alpha/one", "_"])
        self.assertIn("plain,vm", self.complete(comet, "bash", "comet v", 1).split())
        # Without a login, nothing to offer, and no error.
        self.assertEqual(self.complete(Comet(self), "bash", "comet cluster show ", 3).strip(), "")

    def test_scripts(self):
        comet = self.comet()
        bash = comet("completion", "bash")
        self.assertExit(bash, 0)
        self.assertIn("complete -o nosort -F _comet_completion comet", bash.stdout)
        zsh = comet("completion", "zsh")
        self.assertIn("#compdef comet", zsh.stdout)
        self.assertIn("_COMET_COMPLETE=zsh_complete", zsh.stdout)


# One daemon for each of these classes (the parts above are their mixins).


class LoginTests(_Login, _ExitCodes, DaemonCase):
    """Logging in, and the exit codes."""


class CommandTests(_Compute, _Storage, _Activity, _Completion, DaemonCase):
    """Every command group on one daemon."""
