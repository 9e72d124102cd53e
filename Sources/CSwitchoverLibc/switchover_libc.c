#define _GNU_SOURCE
#include "switchover_libc.h"
#include <fcntl.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int switchover_pipe2(int fds[2], int flags)
{
    return pipe2(fds, flags);
}

int switchover_accept4(int fd, int flags)
{
    return accept4(fd, NULL, NULL, flags);
}

int switchover_ioctl(int fd, unsigned long request, unsigned long argument)
{
    return ioctl(fd, request, argument);
}
