/* Direct calls to the libc entry points Swift cannot import as they are: GNU extensions the Glibc
 * module map hides without _GNU_SOURCE (pipe2, accept4) and the variadic ioctl. Each wrapper is one
 * call with a fixed prototype; errno is left as the call set it. */
#ifndef SWITCHOVER_LIBC_H
#define SWITCHOVER_LIBC_H

/* pipe2(2): fds[0] the read end, fds[1] the write end, created with `flags` (O_CLOEXEC, O_NONBLOCK). */
int switchover_pipe2(int fds[2], int flags);

/* accept4(2) without the peer's address: the new socket gets `flags` (SOCK_CLOEXEC) atomically. */
int switchover_accept4(int fd, int flags);

/* ioctl(2) with one argument passed as an integer (a value, or a pointer's address). */
int switchover_ioctl(int fd, unsigned long request, unsigned long argument);

#endif
