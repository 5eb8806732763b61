/**
 * The small English corpus the tiny tokenizer learns its merges from. Changing
 * it changes every generated model, so edit it only on purpose.
 */
export const CORPUS = `
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the woods.
Once upon a time there was a little robot who wanted to learn how to paint. Every morning the robot went to the
garden and looked at the flowers. It saw red roses, yellow tulips and blue violets. The robot said: "I will paint
them all." It tried and tried, and at first the pictures were not very good. But the robot did not give up.
After many days the paintings were beautiful, and all the people in the town came to see them.

Hello! How are you today? I am fine, thank you. What would you like to do? I would like to read a book.
Can you help me find a good story? Of course. Here is one about a ship that sails across the sea.
The weather is nice today. It is warm and sunny, and there is a light wind from the west.
Please tell me the time. It is ten o'clock in the morning. We have a meeting at eleven.

A computer is a machine that follows instructions. A program is a list of instructions that the computer runs.
Programs read data, compute results and write them out. Good programs are simple, clear and tested.
The model reads tokens and predicts the next token. Training changes the weights so the prediction gets better.
The user asks a question and the assistant gives a helpful answer. The assistant is polite and answers briefly.
Numbers: one, two, three, four, five, six, seven, eight, nine, ten. 1 2 3 4 5 6 7 8 9 10 100 2024.

There is a house at the end of the street. In the house there lives an old woman with her cat.
The cat likes to sit by the window and watch the birds. In the winter the snow covers the roofs,
and the children play outside until it gets dark. Then they go home, eat their dinner and go to bed.
She said that she would come back in the evening, but she did not come. We waited for her until night.
They have been working on this project for a long time, and now it is nearly finished.
`;
