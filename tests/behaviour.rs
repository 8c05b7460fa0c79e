//! The behavioural suite against every backend available here: the real kernel's epoll, the
//! epoll backend over the simulated kernel, and the `Sim` backend. The signal and child
//! scenarios run here on the simulations; the real kernel runs them in `signals_real.rs`,
//! which must block signals before any thread starts.

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

mod epoll_over_sim_processes {
    process_suite!(crate::suite::EpollSimFx);
}

mod sim_processes {
    process_suite!(crate::suite::SimFx);
}
