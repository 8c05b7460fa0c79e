//! The behavioural suite against every backend available here: the real kernel's epoll, the
//! epoll backend over the simulated kernel, the kqueue backend over the simulated kqueue (as
//! FreeBSD, macOS and OpenBSD behave: between them every optional kqueue feature is both used
//! and missing), and the `Sim` backend. The signal and child
//! scenarios run here on the simulations; the real kernel runs them in `signals_real.rs`,
//! which must block signals before any thread starts.

#[macro_use]
mod suite;

// The real kernel is out of Miri's reach.
#[cfg(not(miri))]
mod real_epoll {
    behavioural_suite!(crate::suite::Real);
}

mod epoll_over_sim {
    behavioural_suite!(crate::suite::EpollSimFx);
}

mod sim {
    behavioural_suite!(crate::suite::SimFx);
}

mod kqueue_over_sim_freebsd {
    behavioural_suite!(crate::suite::KqueueFreeBsdFx);
}

mod kqueue_over_sim_macos {
    behavioural_suite!(crate::suite::KqueueMacOsFx);
}

mod kqueue_over_sim_openbsd {
    behavioural_suite!(crate::suite::KqueueOpenBsdFx);
}

mod epoll_over_sim_processes {
    process_suite!(crate::suite::EpollSimFx);
}

mod sim_processes {
    process_suite!(crate::suite::SimFx);
}

mod kqueue_over_sim_freebsd_processes {
    process_suite!(crate::suite::KqueueFreeBsdFx);
}

mod kqueue_over_sim_macos_processes {
    process_suite!(crate::suite::KqueueMacOsFx);
}

mod kqueue_over_sim_openbsd_processes {
    process_suite!(crate::suite::KqueueOpenBsdFx);
}
