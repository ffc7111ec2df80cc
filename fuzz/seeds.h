/*
 * seeds.h - seed corpora written by code, not committed as binaries.
 *
 * libFuzzer's last non-flag argument is the corpus directory. If it is
 * missing or empty, each target writes a few valid inputs into it before
 * the run (from LLVMFuzzerInitialize), so a campaign starts from messages
 * and files that get past the first checks instead of from nothing.
 */
#pragma once

#include <stddef.h>

/* The corpus directory of this run, created; NULL when none was given or it holds files. */
const char *seeds_dir_if_empty(int argc, char **argv);

/* Write n bytes as dir/name. */
void seeds_write(const char *dir, const char *name, const void *p, size_t n);
