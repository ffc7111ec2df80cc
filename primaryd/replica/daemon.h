/*
 * daemon.h - entry points of the primary daemon and its status command.
 */
#pragma once

int primary_run(const char *config_path);
int primary_status(const char *config_path);

struct primary;
/*
 * Stop the daemon (SIGTERM, SIGINT): ends the event loop, after which
 * primary_run frees everything and the guarded services stop with us.
 * The one place a planned stop starts, so a handover can be added here.
 */
void primary_stop(struct primary *p, const char *why);
