"""
Comet's packaging.  ``pip install .`` or ``pip install -e .`` installs the
daemon, its twistd plugin and the ``comet-admin`` tool.  Every dependency has a
lower bound.

The plugin, twisted/plugins/comet_plugin.py, is a module of Twisted's
``twisted.plugins`` package, which Twisted extends with the twisted/plugins
folder of every ``sys.path`` entry.  ``pip install .`` copies it into the
installed Twisted's folder.  For ``pip install -e .``, ``package_dir`` says that
every package lives under the checkout's root: setuptools then makes the
editable install put that root on ``sys.path`` (a ``.pth`` file), where Twisted
finds the plugin, instead of an import hook that maps only the package names,
which Twisted's plugin search never asks.
"""

from setuptools import find_packages, setup

setup(
    name="comet",
    version="0.2.0.dev0",
    description="Clusters of libvirt VMs on ZFS zvols exported over iSCSI, behind a JSON REST API",
    python_requires=">=3.11",
    packages=find_packages(include=["comet", "comet.*"]) + ["twisted.plugins"],
    package_dir={"": "."},
    package_data={"twisted": ["plugins/comet_plugin.py"], "comet.web": ["*.html"]},
    include_package_data=True,
    install_requires=[
        "twisted[conch,tls]>=24.7.0",
        "klein>=23.12.0",
        "treq>=23.11.0",
        "attrs>=23.1.0",
        "jsonschema>=4.20.0",
        "libvirt-python>=9.0.0",
        "Pillow>=10.0.0",
        "autobahn>=23.1",
        "prometheus-client>=0.20.0",
        # The cloud-init seed ISO of a provisioned VM (comet.model.provision).
        "pycdlib>=1.14",
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            # make test: the unit tests in a second worker beside the integration tests
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.0",
        ],
    },
    entry_points={"console_scripts": ["comet-admin = comet.admin:main"]},
)
