//! Datastore backends.
