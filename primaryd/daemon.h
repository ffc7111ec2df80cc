/*
 * daemon.h - entry points of the primary daemon and its status command.
 */
#pragma once

int primary_run(const char *config_path);
int primary_status(const char *config_path);
/* `handover NAME`, `stop NAME --everywhere`: ask the running daemon; the exit status. */
int primary_command(const char *config_path, int argc, char **argv);
