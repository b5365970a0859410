// lockboard-harness: the lock board firmware (lockboard.elf) on an emulated ATmega328P (simavr),
// with the board around it emulated too: the 74HC595 output chain driving 16 bolt motors, the
// 74HC165 input chain reading door switches and bolt end stops, and a USB serial adapter that
// shows UART0 as a pseudo-terminal behind a stable symlink.
//
//   lockboard-harness --elf build/lockboard.elf --link /tmp/lockboard [--control /tmp/lb.ctl]
//                     [--travel-ms 300] [--realtime]
//
// stdout: LOCKBOARD_PATH=<link>, LOCKBOARD_TTY=<pty>, LOCKBOARD_CONTROL=<socket>, then one
// `EVENT ...` line per thing that happened (rx <line>, tx <line>, bolt <n> locked|unlocked|moving,
// energised <n> <ms>, door <n> open|closed, reset <why>, plugged <tty>, unplugged, hang,
// short <n>). Control: one command per line on the Unix socket, answered `ok ...` or `err ...`
// (words as `sim lockboard`'s): door <n> open|close, fault none|cut|silence|noise,
// fault jam <n>, fault hang <n> (the firmware hangs when bolt n starts moving), garble, unplug,
// replug, reset, hang, status.
//
// One thread: simavr is not thread-safe, so the pty and the control socket are polled from the
// emulation loop (every 250 us of emulated time). That is also why this does not use simavr's
// uart_pty part (a second thread, a fixed /tmp/simavr-uart0 link): the line must be cut,
// garbled, unplugged and replugged between two instructions.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"

#define CELLS 16
#define FREQ 16000000UL
#define TICK_CYCLES (FREQ / 1000)   // bolt mechanics advance every emulated millisecond
#define IO_CYCLES (FREQ / 4000)     // pty and control socket polled every 250 us
#define BUF 4096
#define MAX_CLIENTS 8

// ATmega328P data-space addresses of the port registers.
#define PINB 0x23
#define DDRD 0x2A
#define PORTD 0x2B

static avr_t* avr;
static volatile sig_atomic_t quit;
static unsigned travel_ms = 300;
static const char* link_path;

// --- the board's hardware --------------------------------------------------------------------
static uint32_t sr595, latch595;   // 4 x 74HC595: shift register, output latches
static uint64_t sr165;             // 6 x 74HC165 shift register
static bool ser, pl = true;        // levels of SER and /PL
static avr_irq_t* qh_irq;

static unsigned pos[CELLS];        // bolt position, ms of travel from locked (0) to unlocked
static bool door_open[CELLS];
static int jammed = -1;            // cell index whose bolt does not move
static int hang_on_move = -1;      // cell index whose bolt's next movement hangs the firmware
static int hang(void);
static unsigned energised[CELLS];  // ms the current movement's coil has been on
static int last_end[CELLS];        // 0 locked, 1 unlocked, -1 between: for bolt events

// --- the serial line ---------------------------------------------------------------------------
static int master = -1, keepalive = -1;
static char tty[128];
static uint8_t to_host[BUF];
static size_t to_host_len;
static uint8_t to_board[BUF];
static size_t to_board_head, to_board_len;
static bool xoff;
static bool cut, noise, garble_next, garbling;
static char rx_line[256], tx_line[256];
static size_t rx_len, tx_len;
static bool tx_line_start = true;

static int ctl_fd = -1;
static int clients[MAX_CLIENTS];
static char client_buf[MAX_CLIENTS][256];
static size_t client_len[MAX_CLIENTS];
// A door moved by a person stays put for a moment: the answer to `door ...` (and so the
// caller's next command) waits DOOR_HOLD_MS of emulated time, longer than the firmware's 20 ms
// debounce, so a script's "open, close" is seen as both, not filtered out as a bounce.
#define DOOR_HOLD_MS 50
static char client_answer[MAX_CLIENTS][512];
static avr_cycle_count_t client_due[MAX_CLIENTS];   // 0: no answer waiting

static void event(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("EVENT ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

static unsigned long emu_ms(void) { return (unsigned long)(avr->cycle / (FREQ / 1000)); }

static void set_qh(void) {
    uint8_t v = (sr165 >> 47) & 1;
    // The pin is an input without pull-up: make the level external so port writes keep it.
    avr_ioport_external_t e = {.name = 'B', .mask = 1 << 2, .value = (uint8_t)(v << 2)};
    avr_ioctl(avr, AVR_IOCTL_IOPORT_SET_EXTERNAL('B'), &e);
    avr_raise_irq(qh_irq, v);
}

static uint64_t inputs(void) {
    // A closed switch pulls its input to ground (0).
    uint64_t v = 0;
    for (int i = 0; i < CELLS; i++) {
        if (door_open[i]) v |= 1ULL << i;
        if (pos[i] != 0) v |= 1ULL << (16 + i);
        if (pos[i] != travel_ms) v |= 1ULL << (32 + i);
    }
    return v;
}

static void pin_changed(avr_irq_t* irq, uint32_t value, void* param) {
    (void)irq;
    int which = (int)(intptr_t)param;
    switch (which) {
    case 4: ser = value; break;                                  // PD4 SER
    case 5: if (value) sr595 = (sr595 << 1) | ser; break;         // PD5 SRCLK rising
    case 6: if (value) latch595 = sr595; break;                   // PD6 RCLK rising
    case 8:                                                       // PB0 /PL
        pl = value;
        if (!pl) { sr165 = inputs(); set_qh(); }
        break;
    case 9:                                                       // PB1 CLK rising
        if (value && pl) { sr165 <<= 1; set_qh(); }
        break;
    }
}

static bool outputs_enabled(void) {
    // /OE has a pull-up: the outputs drive only while the MCU holds PD7 low as an output.
    return (avr->data[DDRD] & 0x80) && !(avr->data[PORTD] & 0x80);
}

static void mechanics_tick(void) {
    bool oe = outputs_enabled();
    for (int i = 0; i < CELLS; i++) {
        bool open = oe && (latch595 >> i & 1), close = oe && (latch595 >> (16 + i) & 1);
        if (open && close) {
            event("short %d", i + 1);   // both halves of the H-bridge on: a firmware bug
            open = close = false;
        }
        if (open || close) {
            energised[i]++;
            if (i != jammed) {
                if (open && pos[i] < travel_ms) pos[i]++;
                if (close && pos[i] > 0) pos[i]--;
            }
        } else if (energised[i]) {
            event("energised %d %u", i + 1, energised[i]);
            energised[i] = 0;
        }
        int end = pos[i] == 0 ? 0 : pos[i] == travel_ms ? 1 : -1;
        if (end != last_end[i]) {
            last_end[i] = end;
            event("bolt %d %s", i + 1, end == 0 ? "locked" : end == 1 ? "unlocked" : "moving");
            if (end == -1 && hang_on_move == i) {
                hang_on_move = -1;
                hang();
            }
        }
    }
}

// --- UART <-> pty ----------------------------------------------------------------------------
static void line_event(const char* dir, char* buf, size_t* len) {
    buf[*len] = 0;
    for (size_t k = 0; k < *len; k++)
        if (buf[k] < 0x20 || buf[k] > 0x7e) buf[k] = '?';
    if (*len) event("%s %s", dir, buf);
    *len = 0;
}

static void host_put(const uint8_t* b, size_t n) {
    if (master < 0 || cut) return;
    if (to_host_len + n > BUF) return;   // nobody reads the pty: dropped, as on a real adapter
    memcpy(to_host + to_host_len, b, n);
    to_host_len += n;
}

static void uart_out(avr_irq_t* irq, uint32_t value, void* param) {
    (void)irq; (void)param;
    uint8_t b = value;
    if (noise && tx_line_start) {
        static const uint8_t junk[] = "~~\xff\x01 line noise \x80\r\n";
        host_put(junk, sizeof junk - 1);
    }
    tx_line_start = b == '\n';
    host_put(&b, 1);
    if (b == '\n' || b == '\r') line_event("tx", tx_line, &tx_len);
    else if (tx_len < sizeof tx_line - 1) tx_line[tx_len++] = b;
}

static void uart_xon(avr_irq_t* irq, uint32_t value, void* param) { (void)irq; (void)value; (void)param; xoff = false; }
static void uart_xoff(avr_irq_t* irq, uint32_t value, void* param) { (void)irq; (void)value; (void)param; xoff = true; }

static void feed_board(void) {
    avr_irq_t* in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    while (to_board_len && !xoff) {
        uint8_t b = to_board[to_board_head];
        to_board_head = (to_board_head + 1) % BUF;
        to_board_len--;
        if (b == '\n' || b == '\r') line_event("rx", rx_line, &rx_len);
        else if (rx_len < sizeof rx_line - 1) rx_line[rx_len++] = b;
        avr_raise_irq(in, b);
    }
}

static void from_host(void) {
    uint8_t buf[256];
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) return;   // EAGAIN; the board keeps the slave open, so never EOF
    for (ssize_t k = 0; k < n; k++) {
        uint8_t b = buf[k];
        if (cut) continue;
        if (garble_next && b != '\n') { garbling = true; garble_next = false; }
        if (garbling) {
            if (b == '\n') garbling = false;
            else b ^= 0x80;   // what a wrong baud rate or a noisy line makes of it
        }
        if (to_board_len == BUF) continue;   // the adapter's buffer is full: lost
        to_board[(to_board_head + to_board_len) % BUF] = b;
        to_board_len++;
    }
}

static void to_host_flush(void) {
    if (master < 0 || !to_host_len) return;
    ssize_t n = write(master, to_host, to_host_len);
    if (n > 0) {
        memmove(to_host, to_host + n, to_host_len - n);
        to_host_len -= n;
    }
}

static int plug(void) {
    int m, s;
    if (openpty(&m, &s, tty, NULL, NULL) < 0) return -1;
    struct termios t;
    tcgetattr(s, &t);
    cfmakeraw(&t);
    tcsetattr(s, TCSANOW, &t);
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    // Publish atomically, like udev's /dev/serial/by-id link.
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.new-link", link_path);
    unlink(tmp);
    if (symlink(tty, tmp) < 0 || rename(tmp, link_path) < 0) {
        close(m); close(s);
        return -1;
    }
    master = m;
    keepalive = s;   // the master never sees a hang-up while the host reopens its side
    to_host_len = 0;
    to_board_len = 0;
    rx_len = tx_len = 0;
    event("plugged %s", tty);
    return 0;
}

static void unplug(void) {
    char target[128];
    ssize_t n = readlink(link_path, target, sizeof target - 1);
    if (n > 0) {
        target[n] = 0;
        if (strcmp(target, tty) == 0) unlink(link_path);
    }
    close(master);
    close(keepalive);
    master = keepalive = -1;
    event("unplugged");
}

// --- resets ------------------------------------------------------------------------------------
static void reset_board(const char* why) {
    avr_reset(avr);
    // avr_reset clears MCUSR; the reset pin sets EXTRF.
    avr_regbit_set(avr, avr->reset_flags.extrf);
    xoff = false;
    event("reset %s", why);
}

static int hang(void) {
    // The firmware freezes with interrupts off: the program counter goes to avr-libc's own halt
    // loop (`cli; rjmp .-2`, at _exit). Only the watchdog gets the board out of it.
    for (uint32_t a = 0; a + 4 <= avr->flashend; a += 2) {
        uint8_t* f = avr->flash + a;
        if (f[0] == 0xf8 && f[1] == 0x94 && f[2] == 0xff && f[3] == 0xcf) {
            avr->pc = a;
            event("hang");
            return 0;
        }
    }
    return -1;
}

// --- control -----------------------------------------------------------------------------------
// Carries out one control line; the answer goes into `out`. Returns how many emulated
// milliseconds to hold the answer back.
static unsigned control(char* line, char* out) {
    unsigned hold = 0;
    char w1[16] = "", w2[16] = "", w3[16] = "";
    int n = sscanf(line, "%15s %15s %15s", w1, w2, w3);
    int cell = atoi(w2) - 1;
    bool valid_cell = cell >= 0 && cell < CELLS;
    snprintf(out, 512, "ok\n");
    if (n == 3 && !strcmp(w1, "door") && (!strcmp(w3, "open") || !strcmp(w3, "close"))) {
        bool open = !strcmp(w3, "open");
        if (!valid_cell) snprintf(out, 512, "err no cell %s\n", w2);
        else if (open && pos[cell] != travel_ms)
            snprintf(out, 512, "err cell %d's bolt is locked: the door cannot open\n", cell + 1);
        else if (door_open[cell] != open) {
            door_open[cell] = open;
            event("door %d %s", cell + 1, open ? "open" : "closed");
            hold = DOOR_HOLD_MS;
        }
    } else if (n == 2 && !strcmp(w1, "fault") && !strcmp(w2, "none")) {
        cut = noise = false;
        jammed = hang_on_move = -1;
    } else if (n == 2 && !strcmp(w1, "fault") && (!strcmp(w2, "cut") || !strcmp(w2, "silence"))) {
        cut = true;
    } else if (n == 2 && !strcmp(w1, "fault") && !strcmp(w2, "noise")) {
        noise = true;
    } else if (n == 3 && !strcmp(w1, "fault") && (!strcmp(w2, "jam") || !strcmp(w2, "hang"))) {
        cell = atoi(w3) - 1;
        if (cell < 0 || cell >= CELLS) snprintf(out, 512, "err no cell %s\n", w3);
        else if (!strcmp(w2, "jam")) jammed = cell;
        else hang_on_move = cell;
    } else if (n == 1 && !strcmp(w1, "garble")) {
        garble_next = true;
    } else if (n == 1 && !strcmp(w1, "unplug")) {
        if (master < 0) snprintf(out, 512, "err the board is unplugged\n");
        else unplug();
    } else if (n == 1 && !strcmp(w1, "replug")) {
        if (master >= 0) snprintf(out, 512, "err the board is already plugged in\n");
        else if (plug() < 0) snprintf(out, 512, "err pty: %s\n", strerror(errno));
        // Opening the port pulses DTR, which resets an Uno (its auto-reset capacitor).
        else reset_board("external");
    } else if (n == 1 && !strcmp(w1, "reset")) {
        reset_board("external");
    } else if (n == 1 && !strcmp(w1, "hang")) {
        if (hang() < 0) snprintf(out, 512, "err no halt loop in the firmware\n");
    } else if (n == 1 && !strcmp(w1, "status")) {
        char bolts[CELLS + 1], doors[CELLS + 1];
        for (int i = 0; i < CELLS; i++) {
            bolts[i] = pos[i] == 0 ? 'L' : pos[i] == travel_ms ? 'U' : 'M';
            doors[i] = door_open[i] ? 'O' : 'C';
        }
        bolts[CELLS] = doors[CELLS] = 0;
        snprintf(out, 512, "ok bolts=%s doors=%s plugged=%s cut=%s noise=%s tty=%s ms=%lu\n",
                 bolts, doors, master >= 0 ? "true" : "false", cut ? "true" : "false",
                 noise ? "true" : "false", master >= 0 ? tty : "-", emu_ms());
    } else {
        snprintf(out, 512, "err unknown control command \"%.200s\"\n", line);
    }
    return hold;
}

static void answer(int k) {
    // Answered after the change took effect; events for it are already on stdout.
    ssize_t ignored = write(clients[k], client_answer[k], strlen(client_answer[k]));
    (void)ignored;
    client_due[k] = 0;
}

static void control_poll(void) {
    if (ctl_fd < 0) return;
    int c = accept4(ctl_fd, NULL, NULL, SOCK_NONBLOCK);
    if (c >= 0) {
        int k;
        for (k = 0; k < MAX_CLIENTS && clients[k] >= 0; k++) {}
        if (k == MAX_CLIENTS) close(c);
        else { clients[k] = c; client_len[k] = 0; client_due[k] = 0; }
    }
    for (int k = 0; k < MAX_CLIENTS; k++) {
        if (clients[k] < 0) continue;
        if (client_due[k]) {
            if (avr->cycle < client_due[k]) continue;   // its next line waits for this answer
            answer(k);
        }
        char* b = client_buf[k];
        ssize_t n = read(clients[k], b + client_len[k], sizeof client_buf[k] - 1 - client_len[k]);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            close(clients[k]);
            clients[k] = -1;
            continue;
        }
        if (n > 0) client_len[k] += n;
        char* nl;
        while (!client_due[k] && (nl = memchr(b, '\n', client_len[k]))) {
            *nl = 0;
            if (nl > b && nl[-1] == '\r') nl[-1] = 0;
            unsigned hold = control(b, client_answer[k]);
            client_due[k] = avr->cycle + (avr_cycle_count_t)hold * (FREQ / 1000) + 1;
            if (!hold) answer(k);
            size_t used = nl + 1 - b;
            memmove(b, nl + 1, client_len[k] - used);
            client_len[k] -= used;
        }
        if (client_len[k] == sizeof client_buf[k] - 1) client_len[k] = 0;   // overlong: dropped
    }
}

static int listen_control(const char* path) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return -1;
    strcpy(a.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr*)&a, sizeof a) < 0 || listen(fd, 8) < 0) return -1;
    return fd;
}

static void on_signal(int s) { (void)s; quit = 1; }

static void skip_sleep(avr_t* a, avr_cycle_count_t how_long) { (void)a; (void)how_long; }

static uint64_t wall_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + t.tv_nsec;
}

int main(int argc, char** argv) {
    const char *elf = NULL, *ctl = NULL;
    bool realtime = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--elf") && i + 1 < argc) elf = argv[++i];
        else if (!strcmp(argv[i], "--link") && i + 1 < argc) link_path = argv[++i];
        else if (!strcmp(argv[i], "--control") && i + 1 < argc) ctl = argv[++i];
        else if (!strcmp(argv[i], "--travel-ms") && i + 1 < argc) travel_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--realtime")) realtime = true;
        else {
            fprintf(stderr, "usage: %s --elf FILE --link PATH [--control SOCKET] [--travel-ms N] [--realtime]\n", argv[0]);
            return 2;
        }
    }
    if (!elf || !link_path || travel_ms == 0) {
        fprintf(stderr, "lockboard-harness: --elf and --link are required, --travel-ms > 0\n");
        return 2;
    }
    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf, &fw) != 0) {
        fprintf(stderr, "lockboard-harness: cannot read %s\n", elf);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr || avr_init(avr) != 0) {
        fprintf(stderr, "lockboard-harness: simavr has no atmega328p\n");
        return 1;
    }
    avr_load_firmware(avr, &fw);
    avr->frequency = FREQ;
    avr->log = LOG_NONE;
    // simavr sleeps the host thread while the MCU sleeps, to keep real time; free-running, the
    // idle time is skipped instead.
    if (!realtime) avr->sleep = skip_sleep;

    for (int k = 0; k < MAX_CLIENTS; k++) clients[k] = -1;
    for (int i = 0; i < CELLS; i++) last_end[i] = 0;
    struct { char port; int pin; int id; } pins[] = {
        {'D', 4, 4}, {'D', 5, 5}, {'D', 6, 6}, {'B', 0, 8}, {'B', 1, 9}};
    for (size_t k = 0; k < sizeof pins / sizeof pins[0]; k++)
        avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(pins[k].port), pins[k].pin),
                                pin_changed, (void*)(intptr_t)pins[k].id);
    qh_irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 2);
    sr165 = inputs();
    set_qh();
    // simavr's UART would otherwise also print the firmware's output on the console
    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), uart_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), uart_xoff, NULL);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (plug() < 0) {
        fprintf(stderr, "lockboard-harness: cannot publish a pty at %s: %s\n", link_path, strerror(errno));
        return 1;
    }
    if (ctl && (ctl_fd = listen_control(ctl)) < 0) {
        fprintf(stderr, "lockboard-harness: cannot listen on %s: %s\n", ctl, strerror(errno));
        return 1;
    }
    printf("LOCKBOARD_PATH=%s\nLOCKBOARD_TTY=%s\n", link_path, tty);
    if (ctl) printf("LOCKBOARD_CONTROL=%s\n", ctl);
    fflush(stdout);

    avr_cycle_count_t next_tick = TICK_CYCLES, next_io = IO_CYCLES;
    uint64_t wall0 = wall_ns();
    avr_cycle_count_t cycle0 = avr->cycle;
    while (!quit) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "lockboard-harness: firmware stopped (state %d) at %lu ms; power-cycling\n",
                    state, emu_ms());
            avr_reset(avr);
            avr_regbit_set(avr, avr->reset_flags.porf);
            event("reset power-on");
        }
        // A sleeping MCU jumps ahead to its next interrupt: catch up every tick it skipped.
        while (avr->cycle >= next_tick) {
            next_tick += TICK_CYCLES;
            mechanics_tick();
        }
        if (avr->cycle >= next_io) {
            next_io = avr->cycle + IO_CYCLES;
            if (master >= 0) {
                from_host();
                to_host_flush();
            }
            feed_board();
            control_poll();
            if (realtime) {
                uint64_t emu = (avr->cycle - cycle0) * 1000ULL / (FREQ / 1000000);
                uint64_t wall = wall_ns() - wall0;
                if (emu > wall + 1000000) usleep((emu - wall) / 1000);
            }
        }
    }
    if (master >= 0) unplug();
    if (ctl) unlink(ctl);
    return 0;
}
