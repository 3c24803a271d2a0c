"""Makes ``twistd gatewayd`` known without importing gatewayd itself."""

from twisted.application.service import ServiceMaker

gatewayd = ServiceMaker(
    "gatewayd",
    "gatewayd.daemon.tap",
    "An AI gateway: Anthropic Messages API clients on Google Gemini.",
    "gatewayd",
)
