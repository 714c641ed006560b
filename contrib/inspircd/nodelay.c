/*
 * LD_PRELOAD shim: sets TCP_NODELAY on every socket the process accepts.
 *
 * rchat sets TCP_NODELAY on its own sockets (a chat line should leave at
 * once); InspIRCd 3 does not, so with Nagle on, its small writes would
 * wait for ACKs and coalesce. Comparing the two fairly means both send
 * each line as it is written.
 *
 *   gcc -shared -fPIC -O2 -o nodelay.so nodelay.c -ldl
 *   LD_PRELOAD=$PWD/nodelay.so inspircd --nofork --runasroot --config=$PWD/inspircd.conf
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int nodelay(int fd)
{
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int accept(int s, struct sockaddr *addr, socklen_t *len)
{
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real)
        real = dlsym(RTLD_NEXT, "accept");
    return nodelay(real(s, addr, len));
}

int accept4(int s, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real)
        real = dlsym(RTLD_NEXT, "accept4");
    return nodelay(real(s, addr, len, flags));
}
