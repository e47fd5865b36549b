// Compile-time check that the implementation matches the hand-written public typings in ../index.d.ts.
import type * as Declared from '../index.js';
import * as Implemented from './index.js';

export const publicApiMatchesTypings: typeof Declared = Implemented;
