/*
 * A peapod volume plugin written in C, against the generated header.
 *
 *   gcc -shared -fPIC -I ../../include -o libcnoop.so noop.c
 *
 * (-DNOOP_ABI_MAJOR=N and -DNOOP_NAME='"x"' change what it declares;
 * -DNOOP_HANG_ON_LOAD makes it never return its table.)
 *
 * Requests arrive as JSON bytes the daemon owns; replies are JSON the plugin
 * allocates with malloc and frees in free_buffer. This plugin publishes by
 * creating the target directory and writing a file named "from-c" into it,
 * so a pod mounting the volume can see that the C code ran.
 */
#include "peapod_plugin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static Buffer reply(const char *json) {
    Buffer b;
    b.len = strlen(json);
    b.ptr = malloc(b.len);
    memcpy(b.ptr, json, b.len);
    return b;
}

/* Copies the string value of "key" from a flat JSON object into out (no escapes). */
static int json_string(const uint8_t *req, uintptr_t len, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    size_t plen = strlen(pattern);
    for (uintptr_t i = 0; i + plen <= len; i++) {
        if (memcmp(req + i, pattern, plen) == 0) {
            size_t n = 0;
            for (uintptr_t j = i + plen; j < len && req[j] != '"' && n + 1 < cap; j++) {
                out[n++] = (char)req[j];
            }
            out[n] = 0;
            return 0;
        }
    }
    return -1;
}

static void free_buffer(Buffer b) { free(b.ptr); }

static int32_t publish(const uint8_t *req, uintptr_t len, Buffer *out) {
    char target[4096];
    if (json_string(req, len, "targetPath", target, sizeof target) != 0) {
        *out = reply("{\"message\":\"targetPath missing\"}");
        return STATUS_INVALID_ARGUMENT;
    }
    if (mkdir(target, 0755) != 0 && errno != EEXIST) {
        *out = reply("{\"message\":\"cannot create the target directory\"}");
        return STATUS_INTERNAL;
    }
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/from-c", target);
    FILE *f = fopen(marker, "w");
    if (f == NULL) {
        *out = reply("{\"message\":\"cannot write the marker file\"}");
        return STATUS_INTERNAL;
    }
    fputs("written by a C plugin\n", f);
    fclose(f);
    *out = reply("{}");
    return STATUS_OK;
}

static int32_t unpublish(const uint8_t *req, uintptr_t len, Buffer *out) {
    (void)req;
    (void)len;
    *out = reply("{}");
    return STATUS_OK;
}

/* Overridable so the tests can also build a plugin of a future ABI. */
#ifndef NOOP_ABI_MAJOR
#define NOOP_ABI_MAJOR ABI_MAJOR
#endif
#ifndef NOOP_NAME
#define NOOP_NAME "cnoop"
#endif

static const PluginTable TABLE = {
    .struct_size = sizeof(PluginTable),
    .abi_major = NOOP_ABI_MAJOR,
    .abi_minor = ABI_MINOR,
    .name = NOOP_NAME,
    .version = "1.0.0",
    .capabilities = 0,
    .free_buffer = free_buffer,
    .publish = publish,
    .unpublish = unpublish,
};

const PluginTable *peapod_volume_plugin(void) {
#ifdef NOOP_HANG_ON_LOAD
    /* For the tests: a plugin that never finishes loading. */
    for (;;) {
        sleep(3600);
    }
#endif
    return &TABLE;
}
