# The two commands of the README.
.PHONY: run test

# Set up (Debian packages, .venv) and start the daemon on its embedded default:
# the API on 127.0.0.1:8080, comet.sqlite here, one host on test:///default.
# On a fresh database it first makes the admin user and prints its API token (once).
run:
	scripts/setup
	.venv/bin/comet-admin $(if $(CONFIG),--config $(CONFIG)) bootstrap
	.venv/bin/twistd -n --pidfile= comet $(if $(CONFIG),--config $(CONFIG))

# Set up and run the whole test suite (the integration tests run when the
# testbed is up: testbed/stack up).  Two pytest-xdist workers: the integration
# tests, one after another in one of them, the unit tests in the other meanwhile
# (tests/conftest.py).
test:
	scripts/setup --test
	.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 -n 2 --dist loadfile tests
