//! agentbox-docker (being written).
