//! What lives as long as the agent, across hosts: the outbox (records
//! waiting for acks) and, later, the configuration and the services.

use std::sync::Arc;

use crate::journal::Limits;
use crate::outbox::Outbox;

#[derive(Debug)]
pub struct Guest {
    pub outbox: Arc<Outbox>,
}

impl Guest {
    pub fn new() -> Arc<Guest> {
        Arc::new(Guest {
            outbox: Outbox::start(Limits::default()),
        })
    }
}
