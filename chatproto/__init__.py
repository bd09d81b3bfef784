"""chatproto: a line-based TCP chat server and client on Twisted."""
