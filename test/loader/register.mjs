// Loads the TypeScript test files and the sources they import through esbuild (see ./hooks.mjs).
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
