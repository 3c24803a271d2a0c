"""The ``adopt:`` endpoint: gatewayd's workers serve a listening socket they inherited."""

from gatewayd.daemon.workers import AdoptedPortParser

adopt = AdoptedPortParser()
