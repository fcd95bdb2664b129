"""The command-line application: options, run kinds, commands, run folders, query cache,
money meter, report. The only part of blackbox_dft that imports adapters."""
