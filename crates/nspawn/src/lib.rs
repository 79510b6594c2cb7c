//! agentbox-nspawn (being written).
