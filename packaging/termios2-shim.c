/*
 * Test-only LD_PRELOAD shim for packaging/qemu-smoke.sh.
 *
 * qemu-user up to at least 7.2 (Debian 12) does not translate the TCGETS2/TCSETS2 ioctls
 * (termios2, used by the serialport crate to set the baud rate) and answers ENOSYS, so a
 * cross-built gateway cannot open a serial port under qemu-user. This shim, preloaded into
 * the emulated process only, rewrites them into TCGETS/TCSETS, which qemu does translate,
 * mapping the speed to the nearest standard Bxxx constant. It is never installed on a device:
 * on real hardware the kernel implements termios2.
 */
#define _GNU_SOURCE
#include <asm/ioctls.h>
#include <asm/termbits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct { unsigned rate; unsigned code; } speeds[] = {
    {0, B0}, {50, B50}, {75, B75}, {110, B110}, {134, B134}, {150, B150}, {200, B200},
    {300, B300}, {600, B600}, {1200, B1200}, {1800, B1800}, {2400, B2400}, {4800, B4800},
    {9600, B9600}, {19200, B19200}, {38400, B38400}, {57600, B57600}, {115200, B115200},
    {230400, B230400}, {460800, B460800}, {921600, B921600},
};
#define NSPEEDS (sizeof speeds / sizeof speeds[0])

static unsigned code_of(unsigned rate) {
    unsigned best = B9600;
    for (unsigned i = 0; i < NSPEEDS; i++)
        if (speeds[i].rate <= rate) best = speeds[i].code;
    return best;
}

static unsigned rate_of(unsigned code) {
    for (unsigned i = 0; i < NSPEEDS; i++)
        if (speeds[i].code == code) return speeds[i].rate;
    return 9600;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);

    if (request == TCGETS2) {
        struct termios t;
        long rc = syscall(SYS_ioctl, fd, TCGETS, &t);
        if (rc != 0) return (int)rc;
        struct termios2 *t2 = arg;
        memset(t2, 0, sizeof *t2);
        memcpy(t2, &t, sizeof t);
        t2->c_ispeed = t2->c_ospeed = rate_of(t.c_cflag & CBAUD);
        return 0;
    }
    if (request == TCSETS2 || request == TCSETSW2 || request == TCSETSF2) {
        const struct termios2 *t2 = arg;
        struct termios t;
        memcpy(&t, t2, sizeof t);
        if ((t.c_cflag & CBAUD) == BOTHER) {
            t.c_cflag &= ~CBAUD;
            t.c_cflag |= code_of(t2->c_ospeed);
        }
        unsigned long r = request == TCSETS2 ? TCSETS : request == TCSETSW2 ? TCSETSW : TCSETSF;
        return (int)syscall(SYS_ioctl, fd, r, &t);
    }
    return (int)syscall(SYS_ioctl, fd, request, arg);
}
