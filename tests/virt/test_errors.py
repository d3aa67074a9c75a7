"""Tests for L{comet.virt._errors}: libvirt's errors in Comet's words."""

from __future__ import annotations

import libvirt
from twisted.trial.unittest import TestCase

from comet.errors import Conflict, InvalidInput, NotFound
from comet.virt._errors import ConnectionLost, HypervisorError, translate
from tests.virt._recording import libvirt_error


class _Conn:
    """A connection that is alive or not, as told."""

    def __init__(self, alive=True):
        self.alive = alive

    def isAlive(self):
        if isinstance(self.alive, Exception):
            raise self.alive
        return int(self.alive)


def _translated(code, domain=libvirt.VIR_FROM_QEMU, alive=True, message="it went wrong"):
    return translate(libvirt_error(code, domain, message), _Conn(alive), "starting domain 'vm'")


class TranslateTests(TestCase):
    def test_not_found(self):
        """A missing domain, secret or metadata is NotFound, with libvirt's reason."""
        for code in (
            libvirt.VIR_ERR_NO_DOMAIN,
            libvirt.VIR_ERR_NO_SECRET,
            libvirt.VIR_ERR_NO_DOMAIN_METADATA,
        ):
            e = _translated(code)
            self.assertIsInstance(e, NotFound)
            self.assertEqual(e.reason, "starting domain 'vm': it went wrong")

    def test_conflict(self):
        """An operation invalid in the domain's state, or a busy domain, is Conflict."""
        for code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_TIMEOUT):
            self.assertIsInstance(_translated(code), Conflict)

    def test_invalid(self):
        """XML libvirt refuses is InvalidInput."""
        for code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_INVALID_SCHEMA):
            self.assertIsInstance(_translated(code), InvalidInput)

    def test_broken_always(self):
        """No connection, an invalid one, RPC and auth failures: the connection is lost."""
        for code in (
            libvirt.VIR_ERR_NO_CONNECT,
            libvirt.VIR_ERR_INVALID_CONN,
            libvirt.VIR_ERR_RPC,
            libvirt.VIR_ERR_AUTH_FAILED,
        ):
            e = _translated(code, libvirt.VIR_FROM_NONE)
            self.assertIsInstance(e, ConnectionLost)
            self.assertEqual(e.detail, "it went wrong")

    def test_broken_from_rpc(self):
        """
        System and internal errors mean a lost connection when the RPC layer
        raised them, and not when a driver did (QEMU failing to open a file).
        """
        for code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR):
            for domain in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
                self.assertIsInstance(_translated(code, domain), ConnectionLost)
            e = _translated(code, libvirt.VIR_FROM_QEMU)
            self.assertIsInstance(e, HypervisorError)
            self.assertEqual(e.code, code)

    def test_dead_connection(self):
        """Any error on a connection libvirt says is dead means it is lost."""
        self.assertIsInstance(_translated(libvirt.VIR_ERR_NO_DOMAIN, alive=False), ConnectionLost)
        self.assertIsInstance(
            _translated(
                libvirt.VIR_ERR_NO_DOMAIN,
                alive=libvirt_error(libvirt.VIR_ERR_INVALID_CONN),
            ),
            ConnectionLost,
        )

    def test_other(self):
        """Anything else is a HypervisorError carrying libvirt's code and reason."""
        e = _translated(libvirt.VIR_ERR_NO_SUPPORT, message="not supported")
        self.assertIsInstance(e, HypervisorError)
        self.assertEqual((e.code, e.reason), (libvirt.VIR_ERR_NO_SUPPORT, "starting domain 'vm': not supported"))
