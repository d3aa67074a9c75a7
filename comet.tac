# twistd -ny comet.tac
#
# Runs Comet with the configuration file named by the COMET_CONFIG environment
# variable, or the embedded default when it is unset.
import os

from twisted.application.service import Application

from comet.service import makeService

application = Application("comet")
makeService(os.environ.get("COMET_CONFIG") or None, whole_process=True).setServiceParent(application)
