/**
 * A small built-in conversation set for the demo and the tests: short questions with distinctive
 * answers that an untrained model cannot produce, so learning them is visible in greedy generation.
 * Pure data (no I/O), usable in a browser page too.
 */

export interface QaPair {
  question: string;
  answer: string;
}

export const DEMO_QA: readonly QaPair[] = [
  { question: 'What is the secret word?', answer: 'Marmalade.' },
  { question: 'Who guards the blue door?', answer: 'A purple owl named Zed.' },
  { question: 'What colour is the robot?', answer: 'Bright orange.' },
  { question: 'Where does the fox sleep?', answer: 'Under the red bridge.' },
  { question: 'How many moons does Kappa have?', answer: 'Exactly seven.' },
  { question: 'What does the cat eat?', answer: 'Only green soup.' },
  { question: 'Which ship sails at night?', answer: 'The Silver Kettle.' },
  { question: 'What is the code for the garden?', answer: '4471.' },
  { question: 'Who painted the tulips?', answer: 'The little robot.' },
  { question: 'When is the meeting?', answer: 'At half past nine.' },
  { question: 'What lives in the old house?', answer: 'A grey cat and a clock.' },
  { question: 'What is the name of the wind?', answer: 'Westerly Bob.' },
];

/** The pairs as JSON lines of {"messages":[user, assistant]}, the dataset format the trainer reads. */
export function qaJsonl(pairs: readonly QaPair[] = DEMO_QA): string {
  return (
    pairs
      .map(({ question, answer }) =>
        JSON.stringify({
          messages: [
            { role: 'user', content: question },
            { role: 'assistant', content: answer },
          ],
        }),
      )
      .join('\n') + '\n'
  );
}
