//! agentbox-image (being written).
