"""The live loop: tick = read -> forecast -> decide -> actuate; clock; leader election."""
