/* libev's side of peers/benches/timers_libev.rs: the same four phases over n timers as
 * dasynq's (benches/common/timer_phases.rs), with libev's idiomatic calls:
 *   insert  ev_timer_set + ev_timer_start, deadlines spread over an hour in scattered order;
 *   rearm   each timer pushed back a minute with ev_timer_again (repeat = the new delay:
 *           libev's documented idle-timer pattern, one heap adjustment);
 *   cancel  ev_timer_stop;
 *   expiry  every timer started already due (distinct deadlines in arm order, as dasynq's),
 *           then ev_run(EVRUN_NOWAIT) until each callback ran;
 *   insert2, rearm2  insert and re-arm once more, into the heap the first phases grew (libev
 *           grows its heap array on demand; dasynq's is reserved at build): the work of
 *           dasynq's insert@ and rearm@ rows, which arm from one clock reading.
 * libev measures delays from its cached loop time (ev_now), where dasynq's first phases read
 * the clock on each arm: that difference is part of what those rows compare. */
#include <ev.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

struct peers_phases {
    double insert, rearm, cancel, expire, insert2, rearm2;
    int ok;
};

static long fired;

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)w;
    (void)revents;
    fired++;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* The same spread as dasynq's: 3600 s + shift, plus (i * 7919) us modulo an hour. */
static double delay(size_t i, double shift) {
    return 3600.0 + shift + (double)(((uint64_t)i * 7919u) % 3600000000u) / 1e6;
}

struct peers_phases peers_libev_timer_phases(size_t n) {
    struct peers_phases r = {0, 0, 0, 0, 0, 0, 0};
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    ev_timer *ws = malloc(n * sizeof *ws);
    if (!loop || !ws) {
        free(ws);
        if (loop) ev_loop_destroy(loop);
        return r;
    }
    for (size_t i = 0; i < n; i++) ev_timer_init(&ws[i], on_timer, 0., 0.);

    double t = now_ns();
    for (size_t i = 0; i < n; i++) {
        ev_timer_set(&ws[i], delay(i, 0), 0.);
        ev_timer_start(loop, &ws[i]);
    }
    r.insert = (now_ns() - t) / (double)n;

    t = now_ns();
    for (size_t i = 0; i < n; i++) {
        ws[i].repeat = delay(i, 60);
        ev_timer_again(loop, &ws[i]);
    }
    r.rearm = (now_ns() - t) / (double)n;

    t = now_ns();
    for (size_t i = 0; i < n; i++) ev_timer_stop(loop, &ws[i]);
    r.cancel = (now_ns() - t) / (double)n;

    /* Every timer due at once, with distinct deadlines in arm order, as dasynq's (each of its
     * After(0) arms reads the clock): a microsecond apart, all already past. With one deadline
     * for all (0.), each of libev's pops would stop at the root (it sifts only past a strictly
     * earlier child), while dasynq's sift the whole depth: not the same work. */
    for (size_t i = 0; i < n; i++) {
        ev_timer_set(&ws[i], -2.0 + (double)i * 1e-6, 0.);
        ev_timer_start(loop, &ws[i]);
    }
    fired = 0;
    t = now_ns();
    while (fired < (long)n) ev_run(loop, EVRUN_NOWAIT);
    r.expire = (now_ns() - t) / (double)n;
    r.ok = fired == (long)n;

    /* Every timer fired once and, being one-shot, is stopped: insert and re-arm again. */
    t = now_ns();
    for (size_t i = 0; i < n; i++) {
        ev_timer_set(&ws[i], delay(i, 0), 0.);
        ev_timer_start(loop, &ws[i]);
    }
    r.insert2 = (now_ns() - t) / (double)n;

    t = now_ns();
    for (size_t i = 0; i < n; i++) {
        ws[i].repeat = delay(i, 60);
        ev_timer_again(loop, &ws[i]);
    }
    r.rearm2 = (now_ns() - t) / (double)n;

    free(ws);
    ev_loop_destroy(loop);
    return r;
}

/* What libev's watcher takes (its heap entry, 16 bytes with libev's cached deadline, is
 * internal and not counted here). */
size_t peers_libev_timer_size(void) { return sizeof(ev_timer); }
