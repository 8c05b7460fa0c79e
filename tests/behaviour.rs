//! The behavioural suite against every backend available here: the real kernel's epoll, the
//! epoll backend over the simulated kernel, and the `Sim` backend.

#[macro_use]
mod suite;

mod real_epoll {
    behavioural_suite!(crate::suite::Real);
}

mod epoll_over_sim {
    behavioural_suite!(crate::suite::EpollSimFx);
}

mod sim {
    behavioural_suite!(crate::suite::SimFx);
}
