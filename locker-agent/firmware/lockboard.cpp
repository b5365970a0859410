// SkyPost lock board firmware: ATmega328P (Arduino Uno/Nano class) driving 16 motorised bolts
// through 74HC595 shift registers and reading 48 switches (door, bolt locked, bolt unlocked per
// cell) through 74HC165 shift registers. Speaks the protocol of `protocol::lockboard` (Rust) on
// UART0 at 9600 8N1. Wiring: README.md in this folder.
//
// Everything runs from loop() without blocking: the switches are scanned every SCAN_MS and
// debounced, bolts move under a per-cell state machine timed by millis(), and commands (STATUS
// included) are answered while bolts travel. The hardware watchdog resets a hung board, and
// READY says why the board started.

#include <Arduino.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <avr/pgmspace.h>

#ifndef FIRMWARE_VERSION
#define FIRMWARE_VERSION "skypost-lockboard/1.0.0"
#endif
// Longest a coil may be energised for one movement. The seed's locks travel in about 11 s; a
// bolt that has not reached its end stop by then is jammed, and the coil is switched off.
#ifndef TRAVEL_MAX_MS
#define TRAVEL_MAX_MS 12000UL
#endif

static const uint8_t CELLS = 16;
static const uint8_t SCAN_MS = 2;         // switch scan period
static const uint8_t DOOR_STABLE = 10;    // scans a door switch must hold: 20 ms
static const uint8_t STOP_STABLE = 2;     // scans an end stop must hold: 4 ms
static const uint8_t LINE_MAX = 16;       // longest command is "CLOSE_255" (9 bytes)
static const uint16_t REFRESH_MS = 100;   // rewrite the outputs even if unchanged
static const uint8_t REPLY_MAX = 100;     // longest reply: STATUS with 16 cells, 95 bytes

// Pins, as direct port bits (digitalWrite is too slow for 80 clock edges every 2 ms).
// 74HC595 chain (4 chips, 32 outputs): SER = D4 (PD4), SRCLK = D5 (PD5), RCLK = D6 (PD6),
// /OE = D7 (PD7, 10k pull-up to 5 V: outputs off while the MCU is in reset).
// 74HC165 chain (6 chips, 48 inputs): /PL = D8 (PB0), CLK = D9 (PB1), QH = D10 (PB2).
#define SR_SER   _BV(PD4)
#define SR_CLK   _BV(PD5)
#define SR_LATCH _BV(PD6)
#define SR_OE    _BV(PD7)
#define IN_LOAD  _BV(PB0)
#define IN_CLK   _BV(PB1)
#define IN_DATA  _BV(PB2)

// Input bit numbers in the 48-bit chain (bit 0 = chip 1 input A). A switch closed to ground
// reads 0. Door switch: closed door = 0, so a cut wire reads "open" (fail safe).
static inline uint8_t door_bit(uint8_t i) { return i; }
static inline uint8_t locked_bit(uint8_t i) { return 16 + i; }
static inline uint8_t unlocked_bit(uint8_t i) { return 32 + i; }
// Output bit numbers in the 32-bit chain: drive towards unlocked / towards locked.
static inline uint8_t open_bit(uint8_t i) { return i; }
static inline uint8_t close_bit(uint8_t i) { return 16 + i; }

// Why the board started, captured before anything else runs (see .init3 below).
uint8_t reset_flags __attribute__((section(".noinit")));

// After a watchdog reset the watchdog stays on at its shortest period: switch it off before the
// C runtime and Arduino's init() run, or the board would reset again before setup().
void early_init(void) __attribute__((naked, used, section(".init3")));
void early_init(void) {
    reset_flags = MCUSR;
    MCUSR = 0;
    wdt_disable();
}

enum Motion : uint8_t { IDLE, OPENING, CLOSING };

struct Cell {
    Motion motion;
    uint32_t started;   // millis() when the coil was energised
};

static Cell cells[CELLS];
static uint8_t raw[6];       // last scan, 48 bits
static uint8_t stable[6];    // debounced
static uint8_t counts[48];   // scans the raw value has differed from the stable one
static bool scanned;         // stable[] holds a real reading
static uint32_t outputs;     // what the 595s should drive
static uint32_t written = 0xFFFFFFFFUL;
static uint32_t last_scan, last_write;

static char line[LINE_MAX + 1];
static uint8_t line_len;
static bool line_bad;        // overlong or not printable: discard until the end of the line

static inline bool bit_of(const uint8_t* v, uint8_t b) { return v[b >> 3] & (1 << (b & 7)); }

static void write_outputs() {
    uint32_t v = outputs;
    // Bit 31 first: after 32 clocks bit 0 sits in chip 1's QA.
    for (int8_t b = 31; b >= 0; b--) {
        if (v & (1UL << b)) PORTD |= SR_SER; else PORTD &= ~SR_SER;
        PORTD |= SR_CLK;
        PORTD &= ~SR_CLK;
    }
    PORTD |= SR_LATCH;
    PORTD &= ~SR_LATCH;
    written = v;
    last_write = millis();
}

static void scan_inputs() {
    // /PL low copies the 48 inputs into the chain; then QH shows bit 47 and each clock the next.
    PORTB &= ~IN_LOAD;
    PORTB |= IN_LOAD;
    for (int8_t b = 47; b >= 0; b--) {
        if (PINB & IN_DATA) raw[b >> 3] |= (1 << (b & 7)); else raw[b >> 3] &= ~(1 << (b & 7));
        PORTB |= IN_CLK;
        PORTB &= ~IN_CLK;
    }
}

static bool door_open(uint8_t i) { return bit_of(stable, door_bit(i)); }
static bool at_locked(uint8_t i) { return !bit_of(stable, locked_bit(i)); }
static bool at_unlocked(uint8_t i) { return !bit_of(stable, unlocked_bit(i)); }

// Replies. Serial's transmit buffer is 256 bytes (Makefile), more than a burst of replies.
static void reply_cmd(const __FlashStringHelper* head, bool open, uint8_t i) {
    Serial.print(head);
    Serial.print(open ? F("OPEN_") : F("CLOSE_"));
    Serial.print(i + 1);
}

static void ok(bool open, uint8_t i) {
    reply_cmd(F("OK "), open, i);
    Serial.print(F("\r\n"));
}

static void err(bool open, uint8_t i, const __FlashStringHelper* code) {
    reply_cmd(F("ERR "), open, i);
    Serial.print(' ');
    Serial.print(code);
    Serial.print(F("\r\n"));
}

static void err_unparsed(const __FlashStringHelper* why) {
    Serial.print(F("ERR - BAD_COMMAND "));
    Serial.print(why);
    Serial.print(F("\r\n"));
}

static void status() {
    Serial.print(F("STATUS"));
    for (uint8_t i = 0; i < CELLS; i++) {
        Serial.print(i == 0 ? ' ' : ',');
        Serial.print(i + 1);
        Serial.print(':');
        // Locked only on the locked end stop's word: a bolt stopped half-way does not lock.
        Serial.print(at_locked(i) ? 'L' : 'U');
        Serial.print(door_open(i) ? 'O' : 'C');
    }
    Serial.print(F("\r\n"));
}

static void door_changed(uint8_t i) {
    Serial.print(F("DOOR "));
    Serial.print(i + 1);
    Serial.print(door_open(i) ? F(" OPEN\r\n") : F(" CLOSED\r\n"));
}

static void stop(uint8_t i) {
    cells[i].motion = IDLE;
    outputs &= ~((1UL << open_bit(i)) | (1UL << close_bit(i)));
}

static void start_move(bool open, uint8_t i) {
    Cell& c = cells[i];
    if (c.motion != IDLE) {
        // The same command again (a host that resent it after a READY it could not place):
        // the movement under way answers both with its one OK or JAMMED.
        if ((c.motion == OPENING) == open) return;
        return err(open, i, F("BUSY bolt is moving the other way"));
    }
    if (open ? at_unlocked(i) : at_locked(i)) return ok(open, i);  // already there
    if (!open && door_open(i)) return err(open, i, F("DOOR_OPEN close the door first"));
    c.motion = open ? OPENING : CLOSING;
    c.started = millis();
    outputs |= 1UL << (open ? open_bit(i) : close_bit(i));
}

// One complete line: OPEN_<n>, CLOSE_<n> or STATUS.
static void command(const char* s) {
    if (strcmp_P(s, PSTR("STATUS")) == 0) return status();
    bool open;
    const char* num;
    if (strncmp_P(s, PSTR("OPEN_"), 5) == 0) {
        open = true;
        num = s + 5;
    } else if (strncmp_P(s, PSTR("CLOSE_"), 6) == 0) {
        open = false;
        num = s + 6;
    } else {
        return err_unparsed(F("unknown command"));
    }
    // 1 to 255, digits only, no leading zero: anything else cannot be echoed back as a command.
    uint16_t n = 0;
    uint8_t digits = 0;
    for (const char* p = num; *p; p++, digits++) {
        if (*p < '0' || *p > '9' || digits == 3 || (digits == 0 && *p == '0'))
            return err_unparsed(F("bad cell number"));
        n = n * 10 + (*p - '0');
    }
    if (digits == 0 || n > 255) return err_unparsed(F("bad cell number"));
    if (n > CELLS) {
        reply_cmd(F("ERR "), open, n - 1);
        Serial.print(F(" BAD_CELL board has 16 cells\r\n"));
        return;
    }
    start_move(open, n - 1);
}

static void read_serial() {
    // Bounded: at most one line of LINE_MAX bytes is kept. At most one command per pass, and
    // only while the transmit buffer has room for its longest reply (STATUS), so a reply never
    // blocks loop() (and the watchdog) on a host that sends faster than it reads. The 64-byte
    // receive buffer is drained far faster than 9600 baud fills it; a host that runs ahead of
    // the replies overflows it (its bytes are dropped, the lines garbled and refused), as on any
    // Uno, but the board goes on.
    int c;
    while (Serial.availableForWrite() >= REPLY_MAX && (c = Serial.read()) >= 0) {
        if (c == '\n' || c == '\r') {
            bool had = line_bad || line_len > 0;
            if (line_bad) err_unparsed(F("line too long or not printable"));
            else if (line_len > 0) {
                line[line_len] = 0;
                command(line);
            }
            line_len = 0;
            line_bad = false;
            if (had) return;
        } else if (line_bad) {
            // discarding until the end of the line
        } else if (c < 0x20 || c > 0x7e || line_len >= LINE_MAX) {
            line_bad = true;
        } else {
            line[line_len++] = (char)c;
        }
    }
}

static void debounce() {
    for (uint8_t b = 0; b < 48; b++) {
        bool r = bit_of(raw, b), s = bit_of(stable, b);
        if (!scanned || r == s) {
            counts[b] = 0;
            if (!scanned) {
                if (r) stable[b >> 3] |= 1 << (b & 7); else stable[b >> 3] &= ~(1 << (b & 7));
            }
            continue;
        }
        uint8_t need = b < 16 ? DOOR_STABLE : STOP_STABLE;
        if (++counts[b] < need) continue;
        counts[b] = 0;
        stable[b >> 3] ^= 1 << (b & 7);
        if (b < 16) door_changed(b);
    }
    scanned = true;
}

static void move_bolts(uint32_t now) {
    for (uint8_t i = 0; i < CELLS; i++) {
        Cell& c = cells[i];
        if (c.motion == IDLE) continue;
        bool open = c.motion == OPENING;
        if (open ? at_unlocked(i) : at_locked(i)) {
            stop(i);
            ok(open, i);
        } else if (now - c.started >= TRAVEL_MAX_MS) {
            // Never energised past its travel time: off, and say so.
            stop(i);
            err(open, i, F("JAMMED bolt did not reach its end stop"));
        }
    }
}

void setup() {
    outputs = 0;
    // Outputs first cleared, then enabled: the 595s power up with random contents.
    PORTD |= SR_OE;
    DDRD |= SR_SER | SR_CLK | SR_LATCH | SR_OE;
    PORTB |= IN_LOAD;
    DDRB |= IN_LOAD | IN_CLK;
    DDRB &= ~IN_DATA;
    write_outputs();
    PORTD &= ~SR_OE;
    Serial.begin(9600);
    // Read the switches before answering anything, so the first STATUS is the truth.
    for (uint8_t k = 0; k < 2; k++) {
        scan_inputs();
        debounce();
    }
    wdt_enable(WDTO_500MS);  // loop() passes every few ms; a full TX buffer holds it < 300 ms
    const __FlashStringHelper* why = F("unknown");
    if (reset_flags & _BV(WDRF)) why = F("watchdog");
    else if (reset_flags & _BV(BORF)) why = F("brown-out");
    else if (reset_flags & _BV(EXTRF)) why = F("external");
    else if (reset_flags & _BV(PORF)) why = F("power-on");
    Serial.print(F("READY " FIRMWARE_VERSION " reset="));
    Serial.print(why);
    Serial.print(F("\r\n"));
    last_scan = millis();
}

void loop() {
    wdt_reset();
    read_serial();
    uint32_t now = millis();
    if ((uint8_t)(now - last_scan) >= SCAN_MS) {
        last_scan = now;
        scan_inputs();
        debounce();
        move_bolts(now);
    }
    if (outputs != written || now - last_write >= REFRESH_MS) write_outputs();
    // Nothing more to do until the next interrupt: the millis() timer (every 1.024 ms), a byte
    // received, or the transmitter wanting its next byte. Saves power on the board, and lets
    // the emulator skip the idle time.
    set_sleep_mode(SLEEP_MODE_IDLE);
    sleep_mode();
}
