# The README's two commands are scripts/run and scripts/test (a minimal Debian
# has no make); these targets are the same, for those who have it.
.PHONY: run test

# scripts/run: set up and start the daemon (make run CONFIG=/etc/comet/comet.toml).
run:
	scripts/run $(if $(CONFIG),--config $(CONFIG))

# scripts/test: set up and run the whole test suite.
test:
	scripts/test
