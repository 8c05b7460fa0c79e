/* libev's side of peers/benches/pipe_chain_libev.rs: libevent's bench.c pipe chain on libev,
 * doing what dasynq's variant does (benches/common/pipe_chain_dasynq.rs): `pipes` pipes,
 * `active` bytes in flight, each read callback reads its one byte and, while writes remain,
 * writes one to the next pipe; with `idle`, each pipe's idle timer (60 s) is re-armed by every
 * event it handles (ev_timer_again). Waits are libev's backend polls (ev_iteration); timing
 * starts after the first `active` writes. */
#define _GNU_SOURCE
#include <ev.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct peers_chain {
    double ns;
    uint64_t events, waits;
    int ok;
};

struct reader {
    ev_io io;
    ev_timer idle;
    size_t idx;
};

static struct {
    int *w;
    size_t n;
    uint64_t writes, count, fired;
    int idle;
} chain;

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents) {
    (void)loop;
    (void)t;
    (void)revents;
    abort(); /* a run takes far less than the idle timeout */
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents) {
    (void)revents;
    struct reader *r = (struct reader *)io;
    char b;
    if (read(io->fd, &b, 1) == 1) {
        chain.count++;
        if (chain.writes > 0) {
            size_t next = r->idx + 1 == chain.n ? 0 : r->idx + 1;
            (void)!write(chain.w[next], "e", 1);
            chain.writes--;
            chain.fired++;
        }
    }
    if (chain.idle) ev_timer_again(loop, &r->idle);
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

struct peers_chain peers_libev_pipe_chain(size_t pipes, size_t active, uint64_t writes,
                                          int idle) {
    struct peers_chain out = {0, 0, 0, 0};
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    struct reader *rs = calloc(pipes, sizeof *rs);
    int *rfd = calloc(pipes, sizeof *rfd);
    chain.w = calloc(pipes, sizeof *chain.w);
    if (!loop || !rs || !rfd || !chain.w || active == 0 || pipes % active != 0) goto done;
    chain.n = pipes;
    chain.writes = writes;
    chain.count = chain.fired = 0;
    chain.idle = idle;
    for (size_t i = 0; i < pipes; i++) {
        int fds[2];
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) goto done;
        rfd[i] = fds[0];
        chain.w[i] = fds[1];
        rs[i].idx = i;
        ev_io_init(&rs[i].io, on_read, fds[0], EV_READ);
        ev_io_start(loop, &rs[i].io);
        if (idle) {
            ev_timer_init(&rs[i].idle, on_idle, 0., 60.);
            ev_timer_again(loop, &rs[i].idle);
        }
    }
    size_t space = pipes / active;
    for (size_t i = 0; i < active; i++) {
        (void)!write(chain.w[i * space], "e", 1);
        chain.fired++;
    }
    double t = now_ns();
    unsigned polls = ev_iteration(loop);
    while (chain.count != chain.fired) ev_run(loop, EVRUN_ONCE);
    out.ns = now_ns() - t;
    out.events = chain.count;
    /* libev's own count of backend polls (ev_iteration), so a turn that did not poll is
     * not counted as a wait. */
    out.waits = ev_iteration(loop) - polls;
    out.ok = 1;
done:
    if (loop) ev_loop_destroy(loop);
    if (rfd && chain.w)
        for (size_t i = 0; i < pipes; i++) {
            if (rfd[i] > 0) close(rfd[i]);
            if (chain.w[i] > 0) close(chain.w[i]);
        }
    free(rs);
    free(rfd);
    free(chain.w);
    chain.w = NULL;
    return out;
}
