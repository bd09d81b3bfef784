"""The twistd plugin: `twistd -n chat --port tcp:7000`."""

from twisted.application.service import ServiceMaker

chat = ServiceMaker(
    "chat",
    "chatproto.tap",
    "A line-based chat server, compatible with the Ruby ProjetReseaux chat",
    "chat",
)
